//! Redis' ACL passwords kept in line with the users' Secrets, live: the steps of a
//! rotation without downtime.
//!
//! Each user's Secret holds `password` (what clients use) and `previous` (what a running
//! rotation moves away from). Every node must accept exactly those two (one when they are
//! equal), and every node's `masterauth` must be the replication user's `password`. A
//! node that accepts less gets the missing hash added (`ACL SETUSER u #HASH`), one that
//! accepts more loses the extra (`ACL SETUSER u !HASH`): the new password works before
//! any client uses it, and the old one stops working only after the operator has settled
//! the rotation (`previous` := `password`), which it does once every client has moved.
//! Nodes restarted meanwhile read both from their Secrets, so a restart never locks a
//! client out either.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use super::node::{NodeAddr, RedisClient};
use crate::acl::{RedisUser, password_hash};
use crate::children::Passwords;

/// What every node must accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Hashes each user must accept, and no others.
    pub accept: BTreeMap<&'static str, BTreeSet<String>>,
    /// The replication user's current password (`masterauth`).
    pub masterauth: String,
}

impl Desired {
    pub fn from_passwords(p: &Passwords) -> Self {
        let accept = RedisUser::ALL
            .iter()
            .map(|u| {
                let pw = p.get(*u);
                (u.name(), BTreeSet::from([password_hash(&pw.password), password_hash(&pw.previous)]))
            })
            .collect();
        Self { accept, masterauth: p.replication.password.clone() }
    }
}

/// One node's ACL passwords (hashes) per user, and its `masterauth`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAcl {
    pub hashes: BTreeMap<String, BTreeSet<String>>,
    pub masterauth: Option<String>,
}

/// What to change on one node. Empty when it is in line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePlan {
    /// Per user: ACL rules (`#HASH` to add, `!HASH` to remove), adds first.
    pub rules: BTreeMap<&'static str, Vec<String>>,
    pub set_masterauth: bool,
}

impl NodePlan {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.set_masterauth
    }
}

/// Pure: the changes that bring `node` in line with `desired`.
pub fn plan(desired: &Desired, node: &NodeAcl) -> NodePlan {
    let mut rules = BTreeMap::new();
    for (user, want) in &desired.accept {
        let have = node.hashes.get(*user).cloned().unwrap_or_default();
        let mut r: Vec<String> = want.difference(&have).map(|h| format!("#{h}")).collect();
        r.extend(have.difference(want).map(|h| format!("!{h}")));
        if !r.is_empty() {
            rules.insert(*user, r);
        }
    }
    NodePlan { rules, set_masterauth: node.masterauth.as_deref() != Some(desired.masterauth.as_str()) }
}

/// How one sync went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Nodes brought in line (or already in line).
    pub in_line: BTreeSet<NodeAddr>,
    /// Nodes changed in this sync.
    pub changed: BTreeSet<NodeAddr>,
    /// Nodes that could not be read or changed, with why.
    pub failed: BTreeMap<NodeAddr, String>,
}

/// Read every node's ACL state and fix what differs, all nodes at once.
pub async fn sync(client: &RedisClient, nodes: &[NodeAddr], desired: &Desired) -> SyncReport {
    let users: Vec<&str> = desired.accept.keys().copied().collect();
    let results: Vec<(NodeAddr, Result<bool, String>)> = futures::stream::iter(nodes.iter().cloned())
        .map(|at| {
            let users = users.clone();
            async move {
                let r = async {
                    let node = client.acl_state(&at, &users).await.map_err(|e| e.to_string())?;
                    let p = plan(desired, &node);
                    if p.is_empty() {
                        return Ok(false);
                    }
                    tracing::info!(node = %at, users = ?p.rules.keys().collect::<Vec<_>>(), masterauth = p.set_masterauth, "bringing Redis ACL passwords in line");
                    client.acl_apply(&at, &p, &desired.masterauth).await.map_err(|e| e.to_string())?;
                    Ok(true)
                }
                .await;
                (at, r)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut report = SyncReport::default();
    for (at, r) in results {
        match r {
            Ok(changed) => {
                if changed {
                    report.changed.insert(at.clone());
                }
                report.in_line.insert(at);
            }
            Err(e) => {
                report.failed.insert(at, e);
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::UserPassword;

    fn passwords(web: UserPassword) -> Passwords {
        let mut p = Passwords::same("r".repeat(20).as_str());
        p.web = web;
        p
    }

    fn node_with(d: &Desired) -> NodeAcl {
        NodeAcl {
            hashes: d.accept.iter().map(|(u, h)| (u.to_string(), h.clone())).collect(),
            masterauth: Some(d.masterauth.clone()),
        }
    }

    #[test]
    fn a_node_in_line_needs_nothing() {
        let d = Desired::from_passwords(&passwords(UserPassword::settled("w".repeat(20))));
        assert!(plan(&d, &node_with(&d)).is_empty());
    }

    #[test]
    fn a_rotation_adds_the_new_password_and_keeps_the_old() {
        let old = "o".repeat(20);
        let settled = Desired::from_passwords(&passwords(UserPassword::settled(old.clone())));
        let node = node_with(&settled);
        let rotating =
            Desired::from_passwords(&passwords(UserPassword { password: "n".repeat(20), previous: old }));
        let p = plan(&rotating, &node);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules["web"], vec![format!("#{}", password_hash(&"n".repeat(20)))]);
        assert!(!p.set_masterauth);
    }

    #[test]
    fn settling_removes_the_old_password() {
        let (old, new) = ("o".repeat(20), "n".repeat(20));
        let rotating = Desired::from_passwords(&passwords(UserPassword {
            password: new.clone(),
            previous: old.clone(),
        }));
        let settled = Desired::from_passwords(&passwords(UserPassword::settled(new)));
        let p = plan(&settled, &node_with(&rotating));
        assert_eq!(p.rules["web"], vec![format!("!{}", password_hash(&old))]);
    }

    #[test]
    fn a_stale_masterauth_is_replaced() {
        let d = Desired::from_passwords(&passwords(UserPassword::settled("w".repeat(20))));
        let mut node = node_with(&d);
        node.masterauth = Some("stale".into());
        let p = plan(&d, &node);
        assert!(p.rules.is_empty() && p.set_masterauth);
    }
}
