//! Who is alive: each node refreshes a key that expires after the node timeout. A node whose
//! key lapsed is dead; the first node to claim its sweep ends its sessions as broken
//! connections end (contacts hear them go unavailable), removes them from Redis, and tells
//! the others which they were, so that every node forgets what it held for them (rooms).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use jid::FullJid;
use serde::Serialize;
use tracing::{info, warn};

use super::link::{Outgoing, REDIS_TIMEOUT};
use super::wire::Entry;
use super::{Cluster, ClusterError, NODE_GONE_TOPIC};
use crate::router::{ClusterLink, NodeId};

/// Removes a session from a dead node's hash only if it still holds what the sweep read: a
/// node that came back meanwhile keeps what it wrote since.
const DELETE_IF_UNCHANGED: &str = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
    return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

/// One node as `corvid ctl cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub number: u16,
    pub name: String,
    pub alive: bool,
    pub sessions: u64,
    /// Milliseconds since its last heartbeat, when one is recorded.
    pub heartbeat_age_ms: Option<u64>,
    pub state: String,
    pub this_node: bool,
}

pub async fn heartbeat(cluster: Arc<Cluster>) {
    let period = Duration::from_secs(cluster.config.heartbeat_secs);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match beat(&cluster).await {
            Ok(dead) => {
                for node in dead {
                    node_died(&cluster, node).await;
                }
            }
            Err(e) => warn!(error = %e, "cluster: heartbeat failed"),
        }
    }
}

/// Says this node is alive and returns the nodes found dead since the last beat.
async fn beat(cluster: &Arc<Cluster>) -> Result<Vec<NodeId>, ClusterError> {
    let me = cluster.me;
    let keys = &cluster.keys;
    let mut conn = cluster.commands.clone();
    let timeout_ms = cluster.config.node_timeout_secs * 1000;
    let sessions = cluster.local().map_or(0, |local| local.local_count());
    let state = if cluster.is_draining() {
        "draining"
    } else {
        "up"
    };
    let (previous, members): (Option<String>, Vec<u16>) = with_timeout(
        redis::pipe()
            .cmd("SET")
            .arg(keys.alive(me))
            .arg(&cluster.name)
            .arg("PX")
            .arg(timeout_ms)
            .arg("GET")
            .hset_multiple(
                keys.node(me),
                &[
                    ("name", cluster.name.clone()),
                    ("sessions", sessions.to_string()),
                    ("heartbeat_ms", crate::ids::now_ms().to_string()),
                    ("state", state.to_owned()),
                ],
            )
            .ignore()
            .sadd(keys.nodes(), me.0)
            .ignore()
            .smembers(keys.nodes())
            .query_async(&mut conn),
    )
    .await?;
    if previous.is_none() && cluster.is_connected() {
        // Our heartbeat had lapsed (a long pause): the others may have swept our sessions.
        warn!("cluster: this node's heartbeat had lapsed; announcing its sessions again");
        let _ = cluster.outbox.send(Outgoing::Republish);
    } else if cluster.is_connected() && cluster.dirty.swap(false, Ordering::Relaxed) {
        let _ = cluster.outbox.send(Outgoing::Republish);
    }
    let others: Vec<NodeId> = members
        .into_iter()
        .map(NodeId)
        .filter(|n| *n != me)
        .collect();
    let mut pipe = redis::pipe();
    for node in &others {
        pipe.exists(keys.alive(*node));
    }
    let alive: Vec<bool> = if others.is_empty() {
        Vec::new()
    } else {
        with_timeout(pipe.query_async(&mut conn)).await?
    };
    let now_alive: HashSet<NodeId> = others
        .iter()
        .zip(&alive)
        .filter(|(_, alive)| **alive)
        .map(|(node, _)| *node)
        .collect();
    *cluster.alive.write().unwrap_or_else(|e| e.into_inner()) = now_alive.clone();
    Ok(others
        .into_iter()
        .filter(|node| !now_alive.contains(node))
        .collect())
}

pub(super) async fn with_timeout<T>(
    query: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(REDIS_TIMEOUT, query).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClusterError::Redis(redis::RedisError::from((
            redis::ErrorKind::Io,
            "timed out",
        )))),
    }
}

/// `node` stopped heartbeating: routing stops choosing its sessions here at once; the node
/// that wins its sweep ends them for everyone.
async fn node_died(cluster: &Arc<Cluster>, node: NodeId) {
    cluster.give_up_on(node);
    cluster.mirror.remove_node(node);
    let mut conn = cluster.commands.clone();
    let claimed: Option<String> = match with_timeout(
        redis::cmd("SET")
            .arg(cluster.keys.sweep(node))
            .arg(cluster.me.0)
            .arg("NX")
            .arg("PX")
            .arg(cluster.config.node_timeout_secs * 1000 * 3)
            .query_async(&mut conn),
    )
    .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            warn!(error = %e, node = node.0, "cluster: could not claim a dead node's sweep");
            return;
        }
    };
    if claimed.is_none() {
        return;
    }
    match sweep(cluster, node).await {
        Ok(count) => info!(
            node = node.0,
            sessions = count,
            "cluster: swept a dead node"
        ),
        Err(e) => warn!(error = %e, node = node.0, "cluster: sweeping a dead node failed"),
    }
}

/// Ends `node`'s sessions recorded in Redis, here and (by telling them) on every node.
async fn sweep(cluster: &Arc<Cluster>, node: NodeId) -> Result<usize, ClusterError> {
    let sessions = read_sessions(cluster, node).await?;
    let mut conn = cluster.commands.clone();
    let mut pipe = redis::pipe();
    for (jid, value) in &sessions {
        pipe.cmd("EVAL")
            .arg(DELETE_IF_UNCHANGED)
            .arg(1)
            .arg(cluster.keys.sessions(node))
            .arg(jid.as_str())
            .arg(value)
            .ignore();
    }
    pipe.srem(cluster.keys.nodes(), node.0).ignore();
    pipe.del(cluster.keys.node(node)).ignore();
    with_timeout(pipe.query_async::<()>(&mut conn)).await?;
    let ended: Vec<(FullJid, bool)> = sessions
        .into_iter()
        .map(|(jid, value)| {
            let available = Entry::decode(&value).is_ok_and(|e| e.availability.is_available());
            (jid, available)
        })
        .collect();
    announce_gone(cluster, node, &ended).await;
    Ok(ended.len())
}

/// At start: sessions this node's number still has in Redis are from before a restart that
/// nobody swept (it came back within the node timeout). They are taken out of Redis here,
/// before this node writes its own, and returned, to end like a dead node's once the link
/// is up (`end_previous_life`): their contacts are told through it.
pub async fn take_previous_life(
    cluster: &Arc<Cluster>,
) -> Result<Vec<(FullJid, bool)>, ClusterError> {
    let me = cluster.me;
    let left = read_sessions(cluster, me).await?;
    if left.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = cluster.commands.clone();
    with_timeout(
        redis::pipe()
            .del(cluster.keys.sessions(me))
            .ignore()
            .query_async::<()>(&mut conn),
    )
    .await?;
    let ended: Vec<(FullJid, bool)> = left
        .into_iter()
        .map(|(jid, value)| {
            let available = Entry::decode(&value).is_ok_and(|e| e.availability.is_available());
            (jid, available)
        })
        .collect();
    Ok(ended)
}

pub async fn end_previous_life(cluster: &Arc<Cluster>, ended: &[(FullJid, bool)]) {
    if ended.is_empty() {
        return;
    }
    info!(
        sessions = ended.len(),
        "cluster: ending the sessions this node had before it restarted"
    );
    announce_gone(cluster, cluster.me, ended).await;
}

/// Runs the session ends here and tells every other node.
async fn announce_gone(cluster: &Arc<Cluster>, node: NodeId, ended: &[(FullJid, bool)]) {
    if ended.is_empty() {
        return;
    }
    cluster.broadcast(NODE_GONE_TOPIC, encode_gone(node, ended));
    if let Some(router) = cluster.router() {
        router.node_gone(node, ended, true).await;
    }
}

/// A node's sessions as a hash, read in pages.
pub async fn read_sessions(
    cluster: &Cluster,
    node: NodeId,
) -> Result<Vec<(FullJid, String)>, ClusterError> {
    let mut conn = cluster.commands.clone();
    let key = cluster.keys.sessions(node);
    let mut cursor = "0".to_owned();
    let mut found = Vec::new();
    loop {
        let (next, fields): (String, Vec<String>) = with_timeout(
            redis::cmd("HSCAN")
                .arg(&key)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn),
        )
        .await?;
        for pair in fields.chunks_exact(2) {
            match super::wire::full_jid_in_normal_form(&pair[0]) {
                Some(jid) => found.push((jid, pair[1].clone())),
                None => warn!(
                    node = node.0,
                    "cluster: a session entry with a malformed JID"
                ),
            }
        }
        if next == "0" {
            return Ok(found);
        }
        cursor = next;
    }
}

/// `node`, then one line per session: availability (`1` or `0`) and JID.
pub fn encode_gone(node: NodeId, sessions: &[(FullJid, bool)]) -> Vec<u8> {
    let mut out = format!("{}\n", node.0);
    for (jid, available) in sessions {
        out.push_str(if *available { "1 " } else { "0 " });
        out.push_str(jid.as_str());
        out.push('\n');
    }
    out.into_bytes()
}

pub fn decode_gone(payload: &[u8]) -> Option<(NodeId, Vec<(FullJid, bool)>)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut lines = text.lines();
    let node = NodeId(lines.next()?.parse().ok()?);
    let mut sessions = Vec::new();
    for line in lines {
        let (available, jid) = line.split_once(' ')?;
        sessions.push((super::wire::full_jid_in_normal_form(jid)?, available == "1"));
    }
    Some((node, sessions))
}

/// Every node Redis knows, with what it last said of itself.
pub async fn nodes(cluster: &Cluster) -> Result<Vec<NodeStatus>, ClusterError> {
    let mut conn = cluster.commands.clone();
    let members: Vec<u16> = with_timeout(
        redis::cmd("SMEMBERS")
            .arg(cluster.keys.nodes())
            .query_async(&mut conn),
    )
    .await?;
    let now = crate::ids::now_ms();
    let mut out = Vec::new();
    for number in members {
        let node = NodeId(number);
        let (info, alive): (std::collections::HashMap<String, String>, bool) = with_timeout(
            redis::pipe()
                .hgetall(cluster.keys.node(node))
                .exists(cluster.keys.alive(node))
                .query_async(&mut conn),
        )
        .await?;
        out.push(NodeStatus {
            number,
            name: info.get("name").cloned().unwrap_or_default(),
            alive,
            sessions: info
                .get("sessions")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            heartbeat_age_ms: info
                .get("heartbeat_ms")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|at| now.saturating_sub(at)),
            state: if alive {
                info.get("state").cloned().unwrap_or_else(|| "up".into())
            } else {
                "dead".into()
            },
            this_node: node == cluster.me,
        });
    }
    out.sort_by_key(|n| n.number);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gone_list_reads_back_and_refuses_garbage() {
        let sessions = vec![
            (FullJid::new("a@x/r 1").unwrap(), true),
            (FullJid::new("b@x/r").unwrap(), false),
        ];
        let encoded = encode_gone(NodeId(4), &sessions);
        assert_eq!(decode_gone(&encoded), Some((NodeId(4), sessions)));
        assert_eq!(decode_gone(b""), None);
        assert_eq!(decode_gone(b"x\n"), None);
        assert_eq!(decode_gone(b"1\n1 not a full jid\n"), None);
    }
}
