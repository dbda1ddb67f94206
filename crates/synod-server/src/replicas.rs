//! The replicas a member hosts, by Raft group. Every peer message names its
//! group and is handed to that group's replica here; a message for a group this
//! member does not host is refused. Today a member hosts one replica, of the one
//! group.

use std::collections::HashMap;
use std::sync::Arc;

use synod_storage::GroupId;

use crate::node::Node;

/// A member's replicas, by group.
#[derive(Default)]
pub struct Replicas {
    by_group: HashMap<GroupId, Arc<Node>>,
}

impl Replicas {
    /// The registry of `replicas`, each under its own group.
    pub fn new(replicas: impl IntoIterator<Item = Arc<Node>>) -> Self {
        Self {
            by_group: replicas
                .into_iter()
                .map(|replica| (replica.group, replica))
                .collect(),
        }
    }

    /// The replica of `group`, if this member hosts one.
    pub fn get(&self, group: GroupId) -> Option<&Arc<Node>> {
        self.by_group.get(&group)
    }
}
