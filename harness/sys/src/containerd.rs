//! A blocking client for containerd's gRPC API over its unix socket: the connection (shared
//! with the CRI client in `faultline-runtime`, which speaks to the same socket) and the one
//! question the `orphan-shim` detector asks: does containerd know a task with this id?
//!
//! containerd serves its API and CRI on one socket (`[grpc] address`, default
//! `/run/containerd/containerd.sock`). The namespace of a call travels in the gRPC metadata
//! header `containerd-namespace` (containerd's `namespaces.GRPCHeader`).
//! tonic needs an async runtime; a current-thread tokio runtime per client keeps the callers
//! synchronous and adds no threads.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::GetRequest;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// containerd's metadata header naming the namespace of a call.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("failed to start an async runtime for gRPC")]
    Runtime(#[source] std::io::Error),
    #[error("failed to connect to containerd at {socket}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd at {socket} did not answer {call} within {limit:?}")]
    Timeout {
        socket: PathBuf,
        call: &'static str,
        limit: Duration,
    },
    #[error("containerd at {socket} failed {call}: {status}")]
    Call {
        socket: PathBuf,
        call: &'static str,
        status: Box<tonic::Status>,
    },
}

/// A connection to one containerd socket.
pub struct GrpcSocket {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    /// Bound for each call (and for connecting).
    pub limit: Duration,
}

impl GrpcSocket {
    /// Connects to the unix socket `socket` (a path as this process sees it; a socket in
    /// another mount namespace can be reached through `/proc/PID/root/...`).
    pub fn connect(socket: &Path, limit: Duration) -> Result<GrpcSocket, ContainerdError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ContainerdError::Runtime)?;
        let path = socket.to_path_buf();
        // The URI is a placeholder: the connector ignores it and dials the socket.
        let endpoint = Endpoint::from_static("http://[::]:50051").connect_timeout(limit);
        let channel = runtime
            .block_on(async move {
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .map_err(|source| ContainerdError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(GrpcSocket {
            socket: socket.to_path_buf(),
            runtime,
            channel,
            limit,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The channel, for other gRPC clients on the same socket (CRI).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Runs one call to completion, bounded by [`GrpcSocket::limit`].
    pub fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, ContainerdError> {
        self.call_within(call, self.limit, fut)
    }

    /// Runs one call to completion, bounded by `limit` (a call that may take longer than
    /// most, as StopPodSandbox does while a shim's unmount hangs).
    pub fn call_within<T>(
        &self,
        call: &'static str,
        limit: Duration,
        fut: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, ContainerdError> {
        self.runtime
            .block_on(async move { tokio::time::timeout(limit, fut).await })
            .map_err(|_| ContainerdError::Timeout {
                socket: self.socket.clone(),
                call,
                limit,
            })?
            .map_err(|status| ContainerdError::Call {
                socket: self.socket.clone(),
                call,
                status: Box::new(status),
            })
    }

    /// A request carrying containerd's namespace header.
    pub fn request<T>(namespace: &str, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Ok(value) = namespace.parse() {
            req.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        req
    }

    /// Whether containerd knows a task `id` in `namespace` (Tasks.Get; NotFound is `false`).
    pub fn task_exists(&self, namespace: &str, id: &str) -> Result<bool, ContainerdError> {
        let mut tasks = TasksClient::new(self.channel());
        let req = Self::request(
            namespace,
            GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            },
        );
        match self.call("Tasks.Get", async move { tasks.get(req).await }) {
            Ok(_) => Ok(true),
            Err(ContainerdError::Call { status, .. }) if status.code() == tonic::Code::NotFound => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_is_a_connect_error_naming_it() {
        let dir =
            std::env::temp_dir().join(format!("faultline-no-containerd-{}", std::process::id()));
        let sock = dir.join("containerd.sock");
        let err = match GrpcSocket::connect(&sock, Duration::from_secs(2)) {
            Ok(_) => panic!("connected to a socket that does not exist"),
            Err(e) => e,
        };
        assert!(matches!(err, ContainerdError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("containerd.sock"), "{err}");
    }
}
