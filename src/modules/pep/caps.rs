//! XEP-0115 entity capabilities, the part PEP needs: reading `<c/>` from presence, checking
//! that a disco#info answer hashes to the advertised `ver` (§5.1 and §5.4), extracting the
//! `+notify` interests (XEP-0163 §4.2), and a bounded cache of verified answers shared by every
//! session on the server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine;
use minidom::Element;
use sha1::Digest;

use crate::xml::ns;

/// Nodes a session asked to be notified about, shared by every session with the same caps.
pub type NotifySet = Arc<HashSet<String>>;

/// A client advertising more interests than this is keeping us busy, not reading events.
const MAX_INTERESTS: usize = 128;
/// Longer node names or caps attributes are not real ones.
const MAX_NAME_LEN: usize = 1024;
const MAX_VER_LEN: usize = 256;

/// The hash functions §5.1 allows in practice (IANA names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    fn parse(name: &str) -> Option<HashAlgo> {
        match name {
            "sha-1" => Some(HashAlgo::Sha1),
            "sha-256" => Some(HashAlgo::Sha256),
            "sha-512" => Some(HashAlgo::Sha512),
            _ => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlgo::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashAlgo::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlgo::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// What a cached answer is filed under: the same (hash, ver) means the same features,
/// whatever client `node` announced it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub algo: HashAlgo,
    pub ver: String,
}

/// The `<c xmlns='http://jabber.org/protocol/caps'/>` of a presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub node: String,
    pub ver: String,
    /// `None` for the legacy format (no `hash`), whose ver cannot be verified.
    pub hash: Option<String>,
}

impl Caps {
    pub fn from_presence(presence: &Element) -> Option<Caps> {
        let c = presence.get_child("c", ns::CAPS)?;
        let node = c.attr("node")?;
        let ver = c.attr("ver")?;
        if node.is_empty() || ver.is_empty() || node.len() > MAX_NAME_LEN || ver.len() > MAX_VER_LEN
        {
            return None;
        }
        Some(Caps {
            node: node.to_owned(),
            ver: ver.to_owned(),
            hash: c.attr("hash").map(str::to_owned),
        })
    }

    /// Where a verified answer is cached; `None` when the ver cannot be verified at all.
    pub fn key(&self) -> Option<CacheKey> {
        let algo = HashAlgo::parse(self.hash.as_deref()?)?;
        Some(CacheKey {
            algo,
            ver: self.ver.clone(),
        })
    }

    /// Two presences with the same hash and ver advertise the same features.
    pub fn same_features(&self, other: &Caps) -> bool {
        self.ver == other.ver && self.hash == other.hash
    }
}

/// §5.4: answers the verification string must not be computed from.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IllFormed {
    #[error("the same identity twice")]
    DuplicateIdentity,
    #[error("the same feature twice")]
    DuplicateFeature,
    #[error("two forms with the same FORM_TYPE")]
    DuplicateForm,
    #[error("a FORM_TYPE with different values")]
    FormTypeValues,
}

fn xml_lang(el: &Element) -> &str {
    el.attrs()
        .iter()
        .find(|((attr_ns, name), _)| attr_ns.as_str() == ns::XML && name.as_str() == "lang")
        .map(|(_, value)| value.as_str())
        .unwrap_or("")
}

fn values(field: &Element) -> Vec<String> {
    field
        .children()
        .filter(|v| v.is("value", ns::DATA_FORMS))
        .map(Element::text)
        .collect()
}

/// One extended-information form (XEP-0128) as §5.1 step 6 reads it, or `None` for a form
/// that does not count (no FORM_TYPE, or a FORM_TYPE that is not hidden).
///
/// Read from the element, not through `xml::forms`: the ver is a hash of what the client
/// sent, and xmpp-parsers refuses forms §5.4 still hashes (a FORM_TYPE repeating one value,
/// which only differing values make ill-formed; a field with a type it does not know, or
/// without var; stray text), so going through `DataForm` would fail answers that verify.
fn form_string(form: &Element) -> Result<Option<(String, String)>, IllFormed> {
    let mut form_type = None;
    let mut fields = Vec::new();
    for field in form.children().filter(|f| f.is("field", ns::DATA_FORMS)) {
        let var = field.attr("var").unwrap_or("");
        if var == "FORM_TYPE" {
            if field.attr("type") != Some("hidden") {
                return Ok(None);
            }
            let mut found = values(field);
            found.sort();
            found.dedup();
            if found.len() != 1 {
                return Err(IllFormed::FormTypeValues);
            }
            form_type = found.pop();
        } else {
            let mut found = values(field);
            found.sort();
            fields.push((var.to_owned(), found));
        }
    }
    let Some(form_type) = form_type else {
        return Ok(None);
    };
    fields.sort();
    let mut s = format!("{form_type}<");
    for (var, values) in fields {
        s.push_str(&var);
        s.push('<');
        for value in values {
            s.push_str(&value);
            s.push('<');
        }
    }
    Ok(Some((form_type, s)))
}

/// The string §5.1 hashes: identities, features, then extended forms, each sorted.
pub fn verification_string(query: &Element) -> Result<String, IllFormed> {
    let mut identities = Vec::new();
    let mut features = Vec::new();
    let mut forms = Vec::new();
    for child in query.children() {
        if child.is("identity", ns::DISCO_INFO) {
            identities.push((
                child.attr("category").unwrap_or(""),
                child.attr("type").unwrap_or(""),
                xml_lang(child),
                child.attr("name").unwrap_or(""),
            ));
        } else if child.is("feature", ns::DISCO_INFO) {
            features.push(child.attr("var").unwrap_or(""));
        } else if child.is("x", ns::DATA_FORMS) {
            if let Some(form) = form_string(child)? {
                forms.push(form);
            }
        }
    }
    identities.sort_unstable();
    if identities.windows(2).any(|w| w[0] == w[1]) {
        return Err(IllFormed::DuplicateIdentity);
    }
    features.sort_unstable();
    if features.windows(2).any(|w| w[0] == w[1]) {
        return Err(IllFormed::DuplicateFeature);
    }
    forms.sort();
    if forms.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(IllFormed::DuplicateForm);
    }
    let mut s = String::new();
    for (category, kind, lang, name) in identities {
        s.push_str(&format!("{category}/{kind}/{lang}/{name}<"));
    }
    for feature in features {
        s.push_str(feature);
        s.push('<');
    }
    for (_, form) in forms {
        s.push_str(&form);
    }
    Ok(s)
}

/// True if `query` (a disco#info answer) is what `key.ver` says it is.
pub fn verify(key: &CacheKey, query: &Element) -> bool {
    match verification_string(query) {
        Ok(s) => {
            let digest = key.algo.digest(s.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(digest) == key.ver
        }
        Err(_) => false,
    }
}

/// The nodes a disco#info answer asks notifications for (`<node>+notify` features).
pub fn interests(query: &Element) -> NotifySet {
    let set = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|c| c.attr("var")?.strip_suffix("+notify"))
        .filter(|node| !node.is_empty() && node.len() <= MAX_NAME_LEN)
        .take(MAX_INTERESTS)
        .map(str::to_owned)
        .collect();
    Arc::new(set)
}

/// Verified answers, oldest evicted first when full. Eviction costs at most one more disco
/// query, so insertion order is good enough; no per-hit bookkeeping on the presence path.
#[derive(Default)]
pub struct CapsCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<CacheKey, NotifySet>,
    order: VecDeque<CacheKey>,
}

impl CapsCache {
    pub fn get(&self, key: &CacheKey) -> Option<NotifySet> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(key).cloned()
    }

    pub fn insert(&self, key: CacheKey, set: NotifySet, capacity: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.map.contains_key(&key) {
            return;
        }
        while inner.map.len() >= capacity.max(1) {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.map.remove(&oldest);
        }
        inner.order.push_back(key.clone());
        inner.map.insert(key, set);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("test xml")
    }

    /// XEP-0115 §5.2, the simple example.
    #[test]
    fn simple_example_verifies() {
        let query = parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
        );
        let key = CacheKey {
            algo: HashAlgo::Sha1,
            ver: "QgayPKawpkPSDYmwT/WM94uAlu0=".into(),
        };
        assert!(verify(&key, &query));
        let wrong = CacheKey {
            ver: "AAAAPKawpkPSDYmwT/WM94uAlu0=".into(),
            ..key
        };
        assert!(!verify(&wrong, &query));
    }

    /// XEP-0115 §5.3, the complex example (languages, an extended form).
    #[test]
    fn complex_example_verifies() {
        let query = parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
             <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
             <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
             <field var='os'><value>Mac</value></field>\
             <field var='os_version'><value>10.5.1</value></field>\
             <field var='software'><value>Psi</value></field>\
             <field var='software_version'><value>0.11</value></field></x></query>",
        );
        assert_eq!(
            verification_string(&query).as_deref(),
            Ok(
                "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<\
                http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
                http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<\
                ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
            )
        );
        let key = CacheKey {
            algo: HashAlgo::Sha1,
            ver: "q07IKJEyjvHSyhy//CH0CxmKi8w=".into(),
        };
        assert!(verify(&key, &query));
    }

    #[test]
    fn duplicates_are_ill_formed() {
        let query = parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='a'/><feature var='a'/></query>",
        );
        assert_eq!(
            verification_string(&query),
            Err(IllFormed::DuplicateFeature)
        );
    }

    #[test]
    fn interests_are_the_notify_features() {
        let query = parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='urn:xmpp:avatar:metadata+notify'/>\
             <feature var='urn:xmpp:avatar:metadata'/><feature var='+notify'/></query>",
        );
        let set = interests(&query);
        assert_eq!(set.len(), 1);
        assert!(set.contains("urn:xmpp:avatar:metadata"));
    }

    #[test]
    fn cache_is_bounded_oldest_out() {
        let cache = CapsCache::default();
        let key = |v: &str| CacheKey {
            algo: HashAlgo::Sha1,
            ver: v.into(),
        };
        for v in ["a", "b", "c"] {
            cache.insert(key(v), NotifySet::default(), 2);
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("a")).is_none());
        assert!(cache.get(&key("c")).is_some());
    }

    /// What `DataForm` would refuse still hashes as §5.4 says (see `form_string`).
    #[test]
    fn forms_xmpp_parsers_refuses_still_hash() {
        let query = parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:x</value><value>urn:x</value></field>\
             <field var='b' type='future-type'><value>2</value><value>1</value></field>\
             <field var='a'><value/></field></x></query>",
        );
        assert_eq!(
            verification_string(&query).as_deref(),
            Ok("urn:x<a<<b<1<2<")
        );
        let differing = parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:x</value><value>urn:y</value></field>\
             </x></query>",
        );
        assert_eq!(
            verification_string(&differing),
            Err(IllFormed::FormTypeValues)
        );
    }
}
