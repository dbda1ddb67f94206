//! The Raft type configuration shared by the storage layer and the node.
//!
//! Log entries carry a [`Command`]: an etcd request exactly as the client sent it
//! (after validation), wrapped in synod's `Command` protobuf. Its serde form is the
//! protobuf encoding, so the log and the peer RPC share one stable codec.

use std::fmt;
use std::sync::{Arc, OnceLock};

use prost::bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use synod_proto::{nested, synodpb};

/// Identifies a Raft group. Group 0 is the only group until sharding arrives; every
/// storage key and peer RPC carries it already.
pub type GroupId = u64;

/// A member's id, computed from its peer URLs and the cluster token as etcd does.
pub type NodeId = u64;

/// What a member is, as far as Raft membership is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// The member's `--name`.
    pub name: String,
    /// URLs its peers reach it on (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

/// Bytes that deserialize from either a serde byte string or a sequence.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("protobuf bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ByteBuf, A::Error> {
                let mut bytes = Vec::new();
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(ByteBuf(bytes))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// One replicated command: the application data of a Raft log entry.
///
/// An entry is cloned for the log's cache and for every follower it is sent to, and
/// encoded for the log and for every follower. Clones share one message and its
/// encoding is made once, so a batch of hundreds of requests is neither deep-copied
/// nor re-encoded on its way through the leader; a follower keeps the bytes it
/// received, so writing them to its log costs no encoding either.
#[derive(Clone, Default)]
pub struct Command(Arc<EncodedCommand>);

#[derive(Default)]
struct EncodedCommand {
    message: synodpb::Command,
    bytes: OnceLock<Vec<u8>>,
}

impl Command {
    /// Wraps `message` for the log.
    pub fn new(message: synodpb::Command) -> Self {
        Self(Arc::new(EncodedCommand {
            message,
            bytes: OnceLock::new(),
        }))
    }

    /// The command itself.
    pub fn message(&self) -> &synodpb::Command {
        &self.0.message
    }

    fn bytes(&self) -> &[u8] {
        self.0.bytes.get_or_init(|| self.0.message.encode_to_vec())
    }
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        self.message() == other.message()
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.message().fmt(f)
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.bytes())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ByteBuf(bytes) = ByteBuf::deserialize(deserializer)?;
        let bytes = Bytes::from(bytes);
        let message = nested::decode_command(bytes.clone()).map_err(serde::de::Error::custom)?;
        Ok(Self(Arc::new(EncodedCommand {
            message,
            // The decoded message holds no view of the bytes, so this is no copy.
            bytes: OnceLock::from(Vec::from(bytes)),
        })))
    }
}

/// What applying a [`Command`] produced, returned to the client that proposed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandResult(pub synodpb::CommandResult);

impl Serialize for CommandResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for CommandResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ByteBuf(bytes) = ByteBuf::deserialize(deserializer)?;
        nested::decode_command_result(Bytes::from(bytes))
            .map(CommandResult)
            .map_err(serde::de::Error::custom)
    }
}

/// File-backed snapshot data, so a snapshot of a large store never sits in memory.
pub type SnapshotFile = tokio::fs::File;

openraft::declare_raft_types!(
    /// synod's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log entry of this configuration.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id of this configuration.
pub type LogId = openraft::LogId<NodeId>;
/// A stored membership of this configuration.
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
/// Openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<NodeId>;
