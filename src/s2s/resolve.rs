//! Where to connect to reach a remote domain (RFC 6120 §3.2, XEP-0368): a configured route,
//! else the `_xmpps-server` (direct TLS) and `_xmpp-server` (STARTTLS) SRV records merged,
//! else the domain's own addresses on port 5269.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;
use rand::seq::SliceRandom;
use rand::Rng;
use tracing::{debug, warn};

use crate::config::S2sConfig;

/// The port of a domain that publishes no SRV records (RFC 6120 §3.2.2).
pub const DEFAULT_PORT: u16 = 5269;

/// One address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// XEP-0368 direct TLS (else STARTTLS)
    pub direct_tls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0} does not offer server-to-server XMPP (its SRV record's target is '.')")]
    NoService(String),
    #[error("no address found for {0}")]
    NotFound(String),
    #[error("DNS lookup for {0} did not finish in time")]
    Timeout(String),
    #[error("s2s route for '{domain}' = '{route}': {reason}")]
    BadRoute {
        domain: String,
        route: String,
        reason: &'static str,
    },
    #[error("'{0}' is not a valid domain name")]
    InvalidDomain(String),
    #[error("DNS lookup failed: {0}")]
    Resolver(String),
}

/// Resolves remote domains; built once from `[s2s]` and shared.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// Keyed by A-label, so a route written with U-labels matches either spelling.
    routes: BTreeMap<String, Route>,
    dns: TokioResolver,
    timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    host: RouteHost,
    port: u16,
    direct_tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RouteHost {
    Ip(IpAddr),
    Name(Name),
}

/// One SRV record of either service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SrvRecord {
    priority: u16,
    weight: u16,
    port: u16,
    target: Name,
    direct_tls: bool,
}

/// What one of the two SRV names said.
enum SrvAnswer {
    Records(Vec<SrvRecord>),
    /// A lone record with target `.` (RFC 2782): the service is decidedly not available.
    Refused,
    /// NXDOMAIN or no SRV records.
    Absent,
    Failed(ResolveError),
}

impl Resolver {
    /// Built once at start from `[s2s]`: routes parsed (bad ones are a config error), the
    /// nameservers (empty = system configuration /etc/resolv.conf; if that cannot be read, fall back
    /// to no upstream so lookups fail fast rather than panic), the hosts file, the timeout.
    pub fn new(config: &S2sConfig) -> Result<Resolver, ResolveError> {
        let mut routes = BTreeMap::new();
        for (domain, route) in &config.routes {
            let key = ascii_domain(domain).ok_or_else(|| ResolveError::BadRoute {
                domain: domain.clone(),
                route: route.clone(),
                reason: "the domain is not a valid domain name",
            })?;
            routes.insert(key, parse_route(domain, route)?);
        }

        let timeout = Duration::from_millis(config.dns_timeout_ms);
        let mut builder = if config.nameservers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(builder) => builder,
                Err(err) => {
                    warn!(%err, "cannot read the system's DNS configuration; s2s DNS lookups will fail");
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(Vec::new()),
                        TokioRuntimeProvider::default(),
                    )
                }
            }
        } else {
            let servers = config.nameservers.iter().map(|&addr| nameserver(addr));
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers.collect()),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        // A lookup runs in two rounds (SRV, then the targets' addresses), each of which may
        // retry once: a quarter of the budget per query lets a dead nameserver surface as
        // hickory's own timeout error rather than only as the overall deadline.
        options.timeout = (timeout / 4).max(Duration::from_millis(1));
        options.attempts = 1;
        options.use_hosts_file = ResolveHosts::Always;
        let dns = builder
            .build()
            .map_err(|err| ResolveError::Resolver(err.to_string()))?;

        Ok(Resolver {
            routes,
            dns,
            timeout,
        })
    }

    /// Addresses to try for `domain`, in the order to try them.
    pub async fn resolve(&self, domain: &str) -> Result<Vec<Target>, ResolveError> {
        let ascii =
            ascii_domain(domain).ok_or_else(|| ResolveError::InvalidDomain(domain.to_owned()))?;
        let targets = tokio::time::timeout(self.timeout, self.resolve_ascii(domain, &ascii))
            .await
            .map_err(|_| ResolveError::Timeout(domain.to_owned()))??;
        debug!(domain, ?targets, "resolved s2s targets");
        Ok(targets)
    }

    async fn resolve_ascii(&self, domain: &str, ascii: &str) -> Result<Vec<Target>, ResolveError> {
        if let Some(route) = self.routes.get(ascii) {
            debug!(domain, ?route, "s2s route overrides DNS");
            return match &route.host {
                RouteHost::Ip(ip) => Ok(vec![Target {
                    addr: SocketAddr::new(*ip, route.port),
                    direct_tls: route.direct_tls,
                }]),
                RouteHost::Name(host) => {
                    let what = format!("{} (the route of {domain})", shown(host));
                    self.addresses(host.clone(), route.port, route.direct_tls, &what)
                        .await
                }
            };
        }
        // RFC 7622 allows an IP literal as a domainpart: nothing to look up.
        if let Some(ip) = ip_literal(ascii) {
            return Ok(vec![Target {
                addr: SocketAddr::new(ip, DEFAULT_PORT),
                direct_tls: false,
            }]);
        }

        let xmpps = format!("_xmpps-server._tcp.{ascii}.");
        let xmpp = format!("_xmpp-server._tcp.{ascii}.");
        let (xmpps, xmpp) = tokio::join!(self.srv(&xmpps, true), self.srv(&xmpp, false));
        let mut usable = Vec::new();
        let mut refused = false;
        let mut failure = None;
        for answer in [xmpps, xmpp] {
            match answer {
                SrvAnswer::Records(records) => usable.extend(records),
                SrvAnswer::Refused => refused = true,
                SrvAnswer::Absent => {}
                SrvAnswer::Failed(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        if !usable.is_empty() {
            if let Some(err) = &failure {
                debug!(domain, %err, "one SRV lookup failed; using the other's records");
            }
            let ordered = order_srv(usable, &mut rand::thread_rng());
            debug!(domain, ?ordered, "SRV records");
            return self.srv_addresses(domain, ordered).await;
        }
        // A failed lookup of the other name might still have found records, so it is not
        // (yet) known that the domain refuses s2s: report the transient failure instead.
        if let Some(err) = failure {
            return Err(err);
        }
        if refused {
            return Err(ResolveError::NoService(domain.to_owned()));
        }
        let name = fqdn(ascii).ok_or_else(|| ResolveError::InvalidDomain(domain.to_owned()))?;
        debug!(domain, "no SRV records; using the domain's own addresses");
        self.addresses(name, DEFAULT_PORT, false, domain).await
    }

    async fn srv(&self, name: &str, direct_tls: bool) -> SrvAnswer {
        let lookup = match self.dns.srv_lookup(name).await {
            Ok(lookup) => lookup,
            Err(err) => {
                return match lookup_failure(err, name) {
                    None => SrvAnswer::Absent,
                    Some(err) => SrvAnswer::Failed(err),
                }
            }
        };
        // Answers may also hold the CNAMEs that led to the records.
        let records: Vec<SrvRecord> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.clone(),
                    direct_tls,
                }),
                _ => None,
            })
            .collect();
        if let [only] = records.as_slice() {
            if only.target.is_root() {
                return SrvAnswer::Refused;
            }
        }
        // A `.` among other records means nothing (RFC 2782 gives it meaning only alone).
        let records: Vec<SrvRecord> = records
            .into_iter()
            .filter(|record| !record.target.is_root())
            .collect();
        if records.is_empty() {
            SrvAnswer::Absent
        } else {
            SrvAnswer::Records(records)
        }
    }

    /// The addresses of every SRV target, looked up concurrently, kept in the SRV order.
    async fn srv_addresses(
        &self,
        domain: &str,
        records: Vec<SrvRecord>,
    ) -> Result<Vec<Target>, ResolveError> {
        let lookups = records.iter().map(|record| {
            let what = shown(&record.target);
            async move {
                self.addresses(record.target.clone(), record.port, record.direct_tls, &what)
                    .await
            }
        });
        let mut targets = Vec::new();
        let mut seen = HashSet::new();
        let mut failure = None;
        for result in join_all(lookups).await {
            match result {
                Ok(found) => {
                    for target in found {
                        if seen.insert((target.addr, target.direct_tls)) {
                            targets.push(target);
                        }
                    }
                }
                Err(err) => {
                    debug!(domain, %err, "an SRV target has no address");
                    if !matches!(err, ResolveError::NotFound(_)) {
                        failure.get_or_insert(err);
                    }
                }
            }
        }
        if targets.is_empty() {
            return Err(failure.unwrap_or_else(|| ResolveError::NotFound(domain.to_owned())));
        }
        Ok(targets)
    }

    /// A and AAAA of `host` (the hosts file first), each with `port`.
    async fn addresses(
        &self,
        mut host: Name,
        port: u16,
        direct_tls: bool,
        what: &str,
    ) -> Result<Vec<Target>, ResolveError> {
        // Fully qualified so that resolv.conf's search list is never appended.
        host.set_fqdn(true);
        let lookup = match self.dns.lookup_ip(host).await {
            Ok(lookup) => lookup,
            Err(err) => {
                return Err(lookup_failure(err, what)
                    .unwrap_or_else(|| ResolveError::NotFound(what.to_owned())))
            }
        };
        let targets: Vec<Target> = lookup
            .iter()
            .map(|ip| Target {
                addr: SocketAddr::new(ip, port),
                direct_tls,
            })
            .collect();
        if targets.is_empty() {
            return Err(ResolveError::NotFound(what.to_owned()));
        }
        Ok(targets)
    }
}

/// `None` when the name simply has no such records; else the error to report.
fn lookup_failure(err: NetError, what: &str) -> Option<ResolveError> {
    // hickory also reports a SERVFAIL as "no records": that one says nothing about the
    // name, so it must not send the lookup on to a fallback.
    if let NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. })) = &err {
        if matches!(
            response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ) {
            return None;
        }
    }
    Some(match err {
        NetError::Timeout => ResolveError::Timeout(what.to_owned()),
        err => ResolveError::Resolver(format!("{what}: {err}")),
    })
}

fn nameserver(addr: SocketAddr) -> NameServerConfig {
    // TCP too: an answer too large for UDP comes back truncated and is asked again over TCP.
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// The A-label form of `domain`, lower case, without a trailing dot; IP literals as they are.
fn ascii_domain(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return None;
    }
    if ip_literal(domain).is_some() {
        return Some(domain.to_ascii_lowercase());
    }
    idna::domain_to_ascii(domain)
        .ok()
        .filter(|ascii| !ascii.is_empty())
}

fn ip_literal(domain: &str) -> Option<IpAddr> {
    if let Some(v6) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    domain.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A name as messages show it, without the root's dot.
fn shown(name: &Name) -> String {
    let ascii = name.to_ascii();
    ascii.strip_suffix('.').unwrap_or(&ascii).to_owned()
}

fn fqdn(ascii: &str) -> Option<Name> {
    Name::from_ascii(format!("{ascii}.")).ok()
}

/// `host:port` (STARTTLS; the port defaults to 5269) or `tls://host:port` (direct TLS, which
/// has no default port); the host an IPv4 address, `[IPv6]` or a name.
fn parse_route(domain: &str, route: &str) -> Result<Route, ResolveError> {
    let bad = |reason| ResolveError::BadRoute {
        domain: domain.to_owned(),
        route: route.to_owned(),
        reason,
    };
    let (direct_tls, rest) = match route.split_once("://") {
        Some(("tls", rest)) => (true, rest),
        Some(_) => return Err(bad("the only scheme known is tls:// (direct TLS)")),
        None => (false, route),
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (v6, tail) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("'[' without ']'"))?;
        let ip = v6
            .parse::<Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address between '[' and ']'"))?;
        let port = match tail {
            "" => None,
            tail => Some(
                tail.strip_prefix(':')
                    .ok_or_else(|| bad("expected ':port' after ']'"))?,
            ),
        };
        (RouteHost::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(bad(
                    "an IPv6 address is written in brackets: [2001:db8::1]:5269",
                ))
            }
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host = match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => RouteHost::Ip(IpAddr::V4(ip)),
            Err(_) => RouteHost::Name(
                ascii_domain(host)
                    .and_then(|ascii| fqdn(&ascii))
                    .ok_or_else(|| bad("the host is not a valid name or address"))?,
            ),
        };
        (host, port)
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        None if direct_tls => return Err(bad("tls:// needs a port (direct TLS has no default)")),
        None => DEFAULT_PORT,
    };
    Ok(Route {
        host,
        port,
        direct_tls,
    })
}

/// The order to try SRV records in: by priority; at equal priority direct TLS first; within
/// each of those groups, RFC 2782's weighted random order.
fn order_srv(mut records: Vec<SrvRecord>, rng: &mut impl Rng) -> Vec<SrvRecord> {
    records.sort_by_key(|record| (record.priority, !record.direct_tls));
    let mut ordered = Vec::with_capacity(records.len());
    for group in records.chunk_by(|a, b| (a.priority, a.direct_tls) == (b.priority, b.direct_tls)) {
        ordered.extend(weighted_order(group.to_vec(), rng));
    }
    ordered
}

/// RFC 2782: the records "in any order, except that all those with weight 0 are placed at the
/// beginning"; then repeatedly pick a random number from 0 to the sum of the weights left and
/// take the first record whose running sum reaches it. A weight-0 record is thus taken only
/// when the number drawn is 0 (or when nothing else is left).
fn weighted_order(mut group: Vec<SrvRecord>, rng: &mut impl Rng) -> Vec<SrvRecord> {
    // Shuffled first so that records of equal weight (weight 0 above all) share the load
    // instead of the first in the answer always winning ties.
    group.shuffle(rng);
    group.sort_by_key(|record| record.weight != 0);
    let mut ordered = Vec::with_capacity(group.len());
    while !group.is_empty() {
        let total: u32 = group.iter().map(|record| u32::from(record.weight)).sum();
        let drawn = rng.gen_range(0..=total);
        let mut running = 0u32;
        let at = group
            .iter()
            .position(|record| {
                running += u32::from(record.weight);
                running >= drawn
            })
            .unwrap_or(0);
        ordered.push(group.remove(at));
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn srv(priority: u16, weight: u16, target: &str, direct_tls: bool) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: if direct_tls { 5270 } else { 5269 },
            target: Name::from_ascii(target).unwrap(),
            direct_tls,
        }
    }

    fn targets(records: &[SrvRecord]) -> Vec<String> {
        records.iter().map(|r| r.target.to_ascii()).collect()
    }

    #[test]
    fn priority_then_direct_tls_then_weight() {
        let records = vec![
            srv(20, 5, "p20-starttls.", false),
            srv(10, 5, "p10-starttls-a.", false),
            srv(20, 5, "p20-tls.", true),
            srv(10, 5, "p10-starttls-b.", false),
            srv(5, 0, "p5-starttls.", false),
            srv(10, 5, "p10-tls.", true),
        ];
        for seed in 0..50 {
            let ordered = order_srv(records.clone(), &mut StdRng::seed_from_u64(seed));
            let keys: Vec<(u16, bool)> =
                ordered.iter().map(|r| (r.priority, r.direct_tls)).collect();
            assert_eq!(
                keys,
                [
                    (5, false),
                    (10, true),
                    (10, false),
                    (10, false),
                    (20, true),
                    (20, false)
                ]
            );
            let mut middle = targets(&ordered[2..4]);
            middle.sort();
            assert_eq!(middle, ["p10-starttls-a.", "p10-starttls-b."]);
        }
    }

    #[test]
    fn weighted_order_is_deterministic_for_a_seed() {
        let group: Vec<SrvRecord> = (0..6)
            .map(|i| srv(0, i * 10, &format!("t{i}."), false))
            .collect();
        let a = weighted_order(group.clone(), &mut StdRng::seed_from_u64(7));
        let b = weighted_order(group.clone(), &mut StdRng::seed_from_u64(7));
        assert_eq!(a, b);
        let mut names = targets(&a);
        names.sort();
        assert_eq!(names, targets(&group));
    }

    #[test]
    fn weights_set_the_odds_of_going_first() {
        let group = vec![srv(0, 1, "light.", false), srv(0, 3, "heavy.", false)];
        let mut rng = StdRng::seed_from_u64(2782);
        let heavy_first = (0..4000)
            .filter(|_| weighted_order(group.clone(), &mut rng)[0].target.to_ascii() == "heavy.")
            .count();
        // 3:1 expects 3000 of 4000.
        assert!((2700..3300).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn weight_zero_goes_first_only_when_zero_is_drawn() {
        let group = vec![srv(0, 0, "zero.", false), srv(0, 100, "hundred.", false)];
        let mut rng = StdRng::seed_from_u64(1);
        let zero_first = (0..10_000)
            .filter(|_| weighted_order(group.clone(), &mut rng)[0].target.to_ascii() == "zero.")
            .count();
        // 1 chance in 101.
        assert!((30..250).contains(&zero_first), "{zero_first}");
    }

    #[test]
    fn all_weights_zero_keeps_every_record() {
        let group: Vec<SrvRecord> = (0..5).map(|i| srv(0, 0, &format!("z{i}."), true)).collect();
        let mut seen_first = HashSet::new();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let ordered = weighted_order(group.clone(), &mut rng);
            assert_eq!(ordered.len(), 5);
            seen_first.insert(ordered[0].target.to_ascii());
        }
        assert_eq!(seen_first.len(), 5, "ties are shared: {seen_first:?}");
    }

    #[test]
    fn routes_parse() {
        let route = |r: &str| parse_route("example.net", r);
        assert_eq!(
            route("10.0.0.7:5269").unwrap(),
            Route {
                host: RouteHost::Ip("10.0.0.7".parse().unwrap()),
                port: 5269,
                direct_tls: false
            }
        );
        assert_eq!(
            route("tls://[2001:db8::7]:5270").unwrap(),
            Route {
                host: RouteHost::Ip("2001:db8::7".parse().unwrap()),
                port: 5270,
                direct_tls: true
            }
        );
        assert_eq!(
            route("Relay.Example").unwrap(),
            Route {
                host: RouteHost::Name(Name::from_ascii("relay.example.").unwrap()),
                port: DEFAULT_PORT,
                direct_tls: false
            }
        );
        assert_eq!(route("[::1]").unwrap().port, DEFAULT_PORT);
        for bad in [
            "tls://10.0.0.7",
            "http://10.0.0.7:80",
            "2001:db8::7:5269",
            "[2001:db8::7:5269",
            "[not-v6]:5269",
            "10.0.0.7:0",
            "10.0.0.7:70000",
            "10.0.0.7:x",
            ":5269",
            "tls://",
            "bad host:5269",
        ] {
            let err = route(bad).expect_err(bad);
            assert!(matches!(err, ResolveError::BadRoute { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn domains_become_a_labels() {
        assert_eq!(
            ascii_domain("Bücher.Example.").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(ascii_domain("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(ascii_domain(""), None);
        assert_eq!(ascii_domain("."), None);
    }

    #[tokio::test]
    async fn a_bad_route_is_a_config_error() {
        let config = S2sConfig {
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            routes: [("example.net".into(), "tls://10.0.0.7".into())].into(),
            ..S2sConfig::default()
        };
        let err = Resolver::new(&config).unwrap_err();
        assert!(err.to_string().contains("example.net"), "{err}");
    }

    #[tokio::test]
    async fn system_configuration_builds() {
        // Built only: a lookup would go to whatever the host's resolv.conf names.
        let resolver = Resolver::new(&S2sConfig::default()).unwrap();
        assert!(resolver.routes.is_empty());
    }
}
