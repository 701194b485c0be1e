//! Importing an [`Image`] through containerd's own API, as `ctr images import` does and
//! without it: the blobs go into the content store under a lease, the layer is unpacked into
//! the overlayfs snapshotter (Snapshots.Prepare, Diff.Apply, Snapshots.Commit), and the image
//! record is created in CRI's namespace, where CRI picks it up from the ImageCreate event.
//!
//! The blobs carry containerd's garbage-collection labels (containerd docs/garbage-collection.md):
//! the manifest references its config and layer, the config the unpacked snapshot, and the
//! layer names its uncompressed digest, so nothing is collected once the lease is gone.

use std::collections::HashMap;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest as CreateLease, DeleteRequest as DeleteLease,
    Image as ImageRecord, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor;
use faultline_sys::containerd::{ContainerdError, GrpcSocket};
use tonic::Code;

use crate::image::{Blob, Image};

/// CRI's containerd namespace.
pub const K8S_NAMESPACE: &str = "k8s.io";
pub const SNAPSHOTTER: &str = "overlayfs";
/// containerd's metadata header naming the lease a call's new objects belong to.
const LEASE_HEADER: &str = "containerd-lease";
const LEASE: &str = "faultline-import";
/// Content.Write takes a blob in chunks; 1 MiB stays well under gRPC's 4 MiB message limit.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("failed to import the image {image}")]
    Call {
        image: String,
        #[source]
        source: ContainerdError,
    },
    #[error("containerd unpacked the layer of {image} as {applied}, not as its diff id {diff_id}")]
    Applied {
        image: String,
        applied: String,
        diff_id: String,
    },
}

fn request<T>(message: T, lease: bool) -> tonic::Request<T> {
    let mut r = GrpcSocket::request(K8S_NAMESPACE, message);
    if lease {
        r.metadata_mut().insert(
            LEASE_HEADER,
            tonic::metadata::MetadataValue::from_static(LEASE),
        );
    }
    r
}

fn descriptor(b: &Blob) -> Descriptor {
    Descriptor {
        media_type: b.media_type.to_string(),
        digest: b.digest.clone(),
        size: b.data.len() as i64,
        annotations: HashMap::new(),
    }
}

fn labels(pairs: &[(String, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

/// `Ok` for success, and for "already exists" (imported before).
fn existing_ok<T>(r: Result<T, ContainerdError>) -> Result<(), ContainerdError> {
    match r {
        Ok(_) => Ok(()),
        Err(ContainerdError::Call { status, .. }) if status.code() == Code::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Imports `image` (blobs, unpacked layer, image record) into containerd at `grpc`.
pub fn import(grpc: &GrpcSocket, image: &Image) -> Result<(), ImportError> {
    let err = |source| ImportError::Call {
        image: image.name.clone(),
        source,
    };
    let mut leases = LeasesClient::new(grpc.channel());
    let create = request(
        CreateLease {
            id: LEASE.into(),
            labels: HashMap::new(),
        },
        false,
    );
    existing_ok(grpc.call("Leases.Create", async move { leases.create(create).await }))
        .map_err(err)?;
    let result = import_leased(grpc, image);
    let mut leases = LeasesClient::new(grpc.channel());
    let delete = request(
        DeleteLease {
            id: LEASE.into(),
            sync: false,
        },
        false,
    );
    let deleted = grpc.call("Leases.Delete", async move { leases.delete(delete).await });
    result?;
    deleted.map(drop).map_err(err)
}

fn import_leased(grpc: &GrpcSocket, image: &Image) -> Result<(), ImportError> {
    let err = |source| ImportError::Call {
        image: image.name.clone(),
        source,
    };
    let snapshot_label = format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}");
    write_blob(
        grpc,
        &image.layer,
        labels(&[("containerd.io/uncompressed".into(), &image.diff_id)]),
    )
    .map_err(err)?;
    write_blob(
        grpc,
        &image.config,
        labels(&[(snapshot_label, image.chain_id())]),
    )
    .map_err(err)?;
    write_blob(
        grpc,
        &image.manifest,
        labels(&[
            (
                "containerd.io/gc.ref.content.config".into(),
                &image.config.digest,
            ),
            (
                "containerd.io/gc.ref.content.l.0".into(),
                &image.layer.digest,
            ),
        ]),
    )
    .map_err(err)?;
    unpack(grpc, image)?;
    let mut images = ImagesClient::new(grpc.channel());
    let create = request(
        CreateImageRequest {
            image: Some(ImageRecord {
                name: image.name.clone(),
                labels: HashMap::new(),
                target: Some(descriptor(&image.manifest)),
                created_at: None,
                updated_at: None,
            }),
            source_date_epoch: None,
        },
        false,
    );
    existing_ok(grpc.call("Images.Create", async move { images.create(create).await })).map_err(err)
}

/// Content.Write: the blob in chunks, the last one committing it with its digest and labels.
fn write_blob(
    grpc: &GrpcSocket,
    blob: &Blob,
    commit_labels: HashMap<String, String>,
) -> Result<(), ContainerdError> {
    let chunks: Vec<&[u8]> = if blob.data.is_empty() {
        vec![&[]]
    } else {
        blob.data.chunks(CHUNK).collect()
    };
    let last = chunks.len() - 1;
    let messages: Vec<WriteContentRequest> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, data)| WriteContentRequest {
            action: if i == last {
                WriteAction::Commit
            } else {
                WriteAction::Write
            } as i32,
            r#ref: format!("faultline-import-{}", blob.digest),
            total: blob.data.len() as i64,
            expected: blob.digest.clone(),
            offset: (i * CHUNK) as i64,
            data: data.to_vec(),
            labels: if i == last {
                commit_labels.clone()
            } else {
                HashMap::new()
            },
        })
        .collect();
    let mut content = ContentClient::new(grpc.channel());
    let req = request(tonic::codegen::tokio_stream::iter(messages), true);
    existing_ok(grpc.call("Content.Write", async move {
        let mut answers = content.write(req).await?.into_inner();
        while answers.message().await?.is_some() {}
        Ok(())
    }))
}

/// The layer into a committed snapshot named by the chain id (skipped if it exists).
fn unpack(grpc: &GrpcSocket, image: &Image) -> Result<(), ImportError> {
    let err = |source| ImportError::Call {
        image: image.name.clone(),
        source,
    };
    let mut snapshots = SnapshotsClient::new(grpc.channel());
    let stat = request(
        StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: image.chain_id().into(),
        },
        false,
    );
    if grpc
        .call("Snapshots.Stat", async move { snapshots.stat(stat).await })
        .is_ok()
    {
        return Ok(());
    }
    let key = format!("extract-faultline-{}", image.chain_id());
    let mut snapshots = SnapshotsClient::new(grpc.channel());
    let prepare = request(
        PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.clone(),
            parent: String::new(),
            labels: HashMap::new(),
        },
        true,
    );
    let mounts = grpc
        .call("Snapshots.Prepare", async move {
            snapshots.prepare(prepare).await
        })
        .map_err(err)?
        .into_inner()
        .mounts;
    let mut diff = DiffClient::new(grpc.channel());
    let apply = request(
        ApplyRequest {
            diff: Some(descriptor(&image.layer)),
            mounts,
            payloads: HashMap::new(),
            sync_fs: false,
        },
        true,
    );
    let applied = grpc
        .call("Diff.Apply", async move { diff.apply(apply).await })
        .map_err(err)?
        .into_inner()
        .applied
        .map(|d| d.digest)
        .unwrap_or_default();
    if applied != image.diff_id {
        return Err(ImportError::Applied {
            image: image.name.clone(),
            applied,
            diff_id: image.diff_id.clone(),
        });
    }
    let mut snapshots = SnapshotsClient::new(grpc.channel());
    let commit = request(
        CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            name: image.chain_id().into(),
            key,
            labels: HashMap::new(),
        },
        true,
    );
    grpc.call(
        "Snapshots.Commit",
        async move { snapshots.commit(commit).await },
    )
    .map(drop)
    .map_err(err)
}
