//! Other servers' certificates are trusted through the system's trust store too (what the
//! operator installed there), not only the built-in Mozilla roots and `s2s.ca_file`. A test of
//! its own: it points the store at a test CA through `SSL_CERT_FILE`, which the whole process
//! sees.

use corvid::tls::s2s::PeerTrust;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

#[test]
fn a_ca_in_the_system_store_is_trusted() {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["peer.test".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf");
    let chain = [leaf.der().clone()];

    let before = PeerTrust::new(None).expect("trust");
    assert!(before.verify(&chain, "peer.test").is_err());

    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("store.pem");
    std::fs::write(&store, ca.pem()).expect("write store");
    // The only test in this binary: no other thread reads the environment meanwhile.
    std::env::set_var("SSL_CERT_FILE", &store);
    let after = PeerTrust::new(None).expect("trust");
    assert_eq!(after.verify(&chain, "peer.test"), Ok(()));
    assert!(after.verify(&chain, "other.test").is_err());
}
