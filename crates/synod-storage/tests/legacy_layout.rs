//! A database written before versions were kept in revision order opens with every
//! version, and answers reads, watches' history and HashKV as it did.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use redb::{Database, Durability};
use synod_proto::etcdserverpb::{PutRequest, RangeRequest};
use synod_storage::mvcc::record::KeyRecord;
use synod_storage::mvcc::{MvccReader, MvccWriter};
use synod_storage::tables::{legacy, sm_meta, SM_META};

const GROUP: u64 = 1;

/// Writes `versions` (key, main revision, tombstone, value) the way the old layout
/// stored them, with the store's revision counter at the last one.
fn write_legacy(path: &std::path::Path, versions: &[(&str, i64, bool, &str)]) {
    let db = Database::create(path).unwrap();
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(Durability::Immediate).unwrap();
    {
        let mut kv = txn.open_table(legacy::KV).unwrap();
        let mut revisions = txn.open_table(legacy::REVISIONS).unwrap();
        for (key, main, tombstone, value) in versions {
            let record = if *tombstone {
                KeyRecord::TOMBSTONE
            } else {
                KeyRecord {
                    tombstone: false,
                    create_revision: 2,
                    version: 1,
                    lease: 0,
                    value: value.as_bytes(),
                }
            };
            kv.insert(
                (GROUP, key.as_bytes(), *main, 0),
                record.encode().as_slice(),
            )
            .unwrap();
            revisions.insert((GROUP, *main, 0), key.as_bytes()).unwrap();
        }
        let mut meta = txn.open_table(SM_META).unwrap();
        let last = versions.last().map_or(1, |version| version.1);
        meta.insert((GROUP, sm_meta::REVISION), last.to_be_bytes().as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
}

fn everything() -> RangeRequest {
    RangeRequest {
        key: b"\0".to_vec(),
        range_end: b"\0".to_vec(),
        ..Default::default()
    }
}

#[test]
fn versions_move_into_revision_order_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    write_legacy(
        &path,
        &[
            ("a", 2, false, "one"),
            ("b", 3, false, "two"),
            ("a", 4, true, ""),
        ],
    );
    let db = synod_storage::open_database(&path, synod_storage::DEFAULT_CACHE_BYTES).unwrap();
    let reader = MvccReader::new(db.clone(), GROUP);

    let now = reader.range(&everything()).unwrap();
    let keys: Vec<&[u8]> = now.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"b"[..]]);
    let then = reader
        .range(&RangeRequest {
            revision: 3,
            ..everything()
        })
        .unwrap();
    let values: Vec<&[u8]> = then.kvs.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(values, vec![&b"one"[..], &b"two"[..]]);
    let history = reader.changes(2, 4, usize::MAX, true).unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[2]
            .event
            .prev_kv
            .as_ref()
            .map(|kv| kv.value.as_slice()),
        Some(&b"one"[..])
    );

    // Writes go on from the moved history, and the old tables are gone for good.
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(Durability::Immediate).unwrap();
    {
        let mut writer = MvccWriter::open(&db, &txn, GROUP).unwrap();
        let put = writer
            .put(&PutRequest {
                key: b"a".to_vec(),
                value: b"three".to_vec(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(put.header.unwrap().revision, 5);
        writer.save().unwrap();
    }
    txn.commit().unwrap();
    let hash = reader.hash_kv(0).unwrap();
    drop(reader);
    drop(db);
    let db = synod_storage::open_database(&path, synod_storage::DEFAULT_CACHE_BYTES).unwrap();
    let reader = MvccReader::new(db.clone(), GROUP);
    assert_eq!(reader.hash_kv(0).unwrap(), hash);
    assert_eq!(reader.range(&everything()).unwrap().kvs.len(), 2);
    let names: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|table| redb::TableHandle::name(&table).to_string())
        .collect();
    assert!(!names.contains(&"kv".to_string()), "{names:?}");
}
