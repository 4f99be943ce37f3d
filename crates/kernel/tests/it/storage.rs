//! The storage backends: one suite run against the local disk and against a
//! real S3 server (SeaweedFS, which checks signatures).

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use sha2::{Digest, Sha256};
use trovato::file::local::LocalStorage;
use trovato::file::s3::{S3Storage, client};
use trovato::file::{ByteStream, FileStorage, StorageError, StorageKey};
use uuid::Uuid;

use crate::harness::s3::Weed;
use crate::harness::services::scratch_root;

const MIB: usize = 1024 * 1024;

/// `total` bytes in 1 MiB chunks of a pattern that differs per chunk, and
/// the SHA-256 they hash to.
fn pattern(total: usize) -> (ByteStream, Vec<u8>) {
    let chunk = move |i: usize| -> Bytes {
        let len = MIB.min(total - i * MIB);
        Bytes::from(
            (0..len)
                .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8))
                .collect::<Vec<u8>>(),
        )
    };
    let n = total.div_ceil(MIB);
    let mut hash = Sha256::new();
    for i in 0..n {
        hash.update(chunk(i));
    }
    let body = stream::iter(0..n).map(move |i| Ok(chunk(i))).boxed();
    (body, hash.finalize().to_vec())
}

/// `good` bytes, then the source fails: as a client that disconnects.
fn failing_after(good: usize) -> ByteStream {
    let (body, _) = pattern(good);
    body.chain(stream::once(async {
        Err(std::io::Error::other("client went away"))
    }))
    .boxed()
}

async fn hash_of(storage: &dyn FileStorage, key: &StorageKey) -> (usize, Vec<u8>) {
    let mut body = storage.get(key, None).await.expect("get");
    let mut hash = Sha256::new();
    let mut len = 0;
    while let Some(chunk) = body.try_next().await.expect("read chunk") {
        len += chunk.len();
        hash.update(&chunk);
    }
    (len, hash.finalize().to_vec())
}

fn key() -> StorageKey {
    StorageKey::generate(Uuid::now_v7(), "bin")
}

/// Everything a backend promises. `leftovers` counts what an aborted write
/// may have left behind (temporary files, multipart uploads).
async fn suite<F, Fut>(storage: &dyn FileStorage, leftovers: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    storage.probe().await.expect("probe");

    // Write, read, ranges, exists, delete.
    let k = key();
    assert!(!storage.exists(&k).await.expect("exists"));
    let n = storage
        .write(&k, Bytes::from_static(b"hello, range world"))
        .await
        .expect("write");
    assert_eq!(n, 18);
    assert!(storage.exists(&k).await.expect("exists"));
    assert_eq!(storage.read(&k).await.expect("read"), b"hello, range world");
    let part: Vec<Bytes> = storage
        .get(&k, Some(7..12))
        .await
        .expect("range")
        .try_collect()
        .await
        .expect("range body");
    assert_eq!(part.concat(), b"range");
    let tail: Vec<Bytes> = storage
        .get(&k, Some(13..18))
        .await
        .expect("tail range")
        .try_collect()
        .await
        .expect("tail body");
    assert_eq!(tail.concat(), b"world");
    storage.delete(&k).await.expect("delete");
    assert!(!storage.exists(&k).await.expect("exists after delete"));
    assert!(matches!(
        storage.get(&k, None).await,
        Err(StorageError::NotFound(_))
    ));
    storage
        .delete(&k)
        .await
        .expect("deleting a missing object is fine");

    // 100 MB streamed in and out, byte for byte.
    let big = key();
    let (body, want) = pattern(100 * 1000 * 1000);
    let written = storage.put(&big, body).await.expect("100 MB put");
    assert_eq!(written, 100 * 1000 * 1000);
    let (len, got) = hash_of(storage, &big).await;
    assert_eq!(len, 100 * 1000 * 1000);
    assert_eq!(got, want, "the 100 MB object reads back as written");
    storage.delete(&big).await.expect("delete big");

    // A source that fails mid-way (after more than one part) leaves nothing.
    let aborted = key();
    let err = storage
        .put(&aborted, failing_after(20 * MIB))
        .await
        .expect_err("a failing source fails the write");
    assert!(matches!(err, StorageError::Source(_)), "{err}");
    assert!(!storage.exists(&aborted).await.expect("exists"));
    assert_eq!(
        leftovers().await,
        0,
        "an aborted write left something behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_backend_passes_the_storage_suite() {
    let root = scratch_root().join(format!("local-{}", Uuid::now_v7().simple()));
    let storage = LocalStorage::open(&root).await.expect("open");
    let incoming = root.join(".incoming");
    suite(&storage, || async {
        std::fs::read_dir(&incoming).map_or(0, |d| d.count())
    })
    .await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_backend_passes_the_storage_suite_against_a_real_server() {
    let weed = Weed::start().await;
    let storage = S3Storage::new(client(&weed.settings()).expect("client"), "private");
    suite(&storage, || weed.pending_uploads()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_s3_secret_is_refused_by_the_server() {
    let weed = Weed::start().await;
    let mut settings = weed.settings();
    settings.s3_secret_access_key = Some("not-the-secret".into());
    let storage = S3Storage::new(client(&settings).expect("client"), "public");
    let k = key();
    let err = storage
        .write(&k, Bytes::from_static(b"x"))
        .await
        .expect_err("a bad signature is refused");
    assert!(matches!(err, StorageError::Backend(_)), "{err}");
    assert!(storage.probe().await.is_err(), "the probe sees the refusal");
    // The right secret sees that nothing was stored.
    let good = S3Storage::new(client(&weed.settings()).expect("client"), "public");
    assert!(!good.exists(&k).await.expect("exists"));
}
