//! Who administers what: server-wide admins (`admins` at the top of the configuration) for
//! every hosted domain, and each domain's own admins (`[hosts."…"] admins`). The "edit admin
//! list" command stores a domain's list, which then takes the place of the configured one;
//! the server-wide list comes from the configuration alone, so an edit can never lock the
//! operator out.

use std::collections::BTreeSet;

use jid::BareJid;

use super::AdminResult;
use crate::router::Router;

fn setting_name(domain: &str) -> String {
    format!("admins:{domain}")
}

/// Normalised bare JIDs from configured text; malformed entries are skipped (check-config
/// reports them).
fn parse_list<'a>(entries: impl IntoIterator<Item = &'a str>) -> BTreeSet<BareJid> {
    entries
        .into_iter()
        .filter_map(|entry| BareJid::new(entry.trim()).ok())
        .collect()
}

/// The configuration admins are read from: the latest one a reload accepted, so an edited
/// admin list applies on SIGHUP or `corvid ctl reload` without a restart.
fn with_live_config<T>(router: &Router, read: impl FnOnce(&crate::config::Config) -> T) -> T {
    match router.reloader() {
        Some(reloader) => read(&reloader.config()),
        None => read(router.config()),
    }
}

pub fn server_admins(router: &Router) -> BTreeSet<BareJid> {
    with_live_config(router, |config| {
        parse_list(config.admins.iter().map(String::as_str))
    })
}

/// The admins of `domain` besides the server-wide ones: the stored edit if there is one,
/// else the domain's configured list.
pub async fn domain_admins(router: &Router, domain: &str) -> AdminResult<BTreeSet<BareJid>> {
    let stored = router
        .storage()
        .admin
        .setting(&setting_name(domain))
        .await?;
    Ok(match stored {
        Some(list) => parse_list(list.lines()),
        None => with_live_config(router, |config| {
            parse_list(
                config
                    .hosts
                    .get(domain)
                    .into_iter()
                    .flat_map(|host| host.admins.iter().map(String::as_str)),
            )
        }),
    })
}

/// Everyone who administers `domain`.
pub async fn admins_of(router: &Router, domain: &str) -> AdminResult<BTreeSet<BareJid>> {
    let mut all = server_admins(router);
    all.extend(domain_admins(router, domain).await?);
    Ok(all)
}

pub fn is_server_admin(router: &Router, user: &BareJid) -> bool {
    server_admins(router).contains(user)
}

/// Whether `user` administers `domain`. A storage failure denies.
pub async fn may_administer(router: &Router, user: &BareJid, domain: &str) -> bool {
    if is_server_admin(router, user) {
        return true;
    }
    match domain_admins(router, domain).await {
        Ok(admins) => admins.contains(user),
        Err(e) => {
            tracing::warn!(error = %e, "admin list lookup failed; not an admin");
            false
        }
    }
}

/// Stores `domain`'s own admin list (server-wide admins are left out: they stay admins
/// whatever the list says).
pub async fn set_domain_admins(
    router: &Router,
    domain: &str,
    admins: &BTreeSet<BareJid>,
) -> AdminResult<()> {
    let server = server_admins(router);
    let list: Vec<&str> = admins
        .iter()
        .filter(|jid| !server.contains(*jid))
        .map(|jid| jid.as_str())
        .collect();
    router
        .storage()
        .admin
        .set_setting(&setting_name(domain), Some(&list.join("\n")))
        .await?;
    Ok(())
}
