//! Asking rpcbind (the portmapper, program 100000) whether an RPC program is registered:
//! one PMAPPROC_GETPORT call over UDP (RFC 1833, version 2), the question `rpcinfo -p` and
//! the kernel's NSM client both ask before talking to rpc.statd.
//!
//! Hand-written: the call is 56 bytes of XDR and the reply 28, and the Rust ONC RPC crates
//! are either unmaintained or full RPC frameworks; `rpcinfo` is not installed everywhere
//! (it lives in the rpcbind package).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub const PMAP_PROGRAM: u32 = 100_000;
pub const PMAP_VERSION: u32 = 2;
pub const PMAPPROC_GETPORT: u32 = 3;
/// rpc.statd (Network Status Monitor).
pub const NSM_PROGRAM: u32 = 100_024;
pub const NSM_VERSION: u32 = 1;
/// The NFS lock manager (lockd).
pub const NLM_PROGRAM: u32 = 100_021;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;
/// rpcbind's well-known port.
pub const RPCBIND_PORT: u16 = 111;

/// The local rpcbind, where the kernel's NSM client asks for rpc.statd: 127.0.0.1:111.
pub fn rpcbind_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, RPCBIND_PORT))
}

#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    #[error("failed to reach rpcbind at {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("rpcbind at {addr} sent a reply we cannot read: {reason}")]
    BadReply { addr: SocketAddr, reason: String },
}

/// The port `program`/`version` is registered on for `protocol`, `Ok(None)` when rpcbind
/// answers that it is not registered. The call is sent twice at most, each waiting half of
/// `timeout` for the answer, so the whole takes about `timeout` when rpcbind is silent.
pub fn getport(
    rpcbind: SocketAddr,
    program: u32,
    version: u32,
    protocol: u32,
    timeout: Duration,
) -> Result<Option<u16>, PortmapError> {
    let io = |source| PortmapError::Io {
        addr: rpcbind,
        source,
    };
    let bind: SocketAddr = if rpcbind.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let sock = UdpSocket::bind(bind).map_err(io)?;
    // Connected, so that an ICMP port unreachable (no rpcbind) is reported as ECONNREFUSED.
    sock.connect(rpcbind).map_err(io)?;
    // The two tries below share the timeout (`set_read_timeout` refuses a zero duration).
    let per_try = (timeout / 2).max(Duration::from_millis(1));
    sock.set_read_timeout(Some(per_try)).map_err(io)?;
    let xid = std::process::id()
        ^ (std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .subsec_nanos());
    let call = encode_getport(xid, program, version, protocol);
    // UDP may drop a datagram; two tries within the timeout.
    let mut buf = [0u8; 512];
    let mut last = None;
    for _ in 0..2 {
        sock.send(&call).map_err(io)?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                return decode_getport_reply(xid, &buf[..n])
                    .map(|port| (port != 0).then_some(port as u16))
                    .map_err(|reason| PortmapError::BadReply {
                        addr: rpcbind,
                        reason,
                    })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                last = Some(e)
            }
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(last.expect("loop ran")))
}

/// The XDR of a PMAPPROC_GETPORT call with AUTH_NULL credentials.
pub fn encode_getport(xid: u32, program: u32, version: u32, protocol: u32) -> Vec<u8> {
    let words = [
        xid,
        0, // CALL
        2, // RPC version
        PMAP_PROGRAM,
        PMAP_VERSION,
        PMAPPROC_GETPORT,
        0, // cred: AUTH_NULL
        0, // cred length
        0, // verf: AUTH_NULL
        0, // verf length
        program,
        version,
        protocol,
        0, // port (ignored)
    ];
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// The port from a GETPORT reply: xid, REPLY, MSG_ACCEPTED, verifier, SUCCESS, port.
pub fn decode_getport_reply(xid: u32, reply: &[u8]) -> Result<u32, String> {
    let word = |i: usize| -> Result<u32, String> {
        reply
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("reply of {} bytes is too short", reply.len()))
    };
    if word(0)? != xid {
        return Err("reply to another call (xid differs)".into());
    }
    if word(1)? != 1 {
        return Err("not a reply".into());
    }
    if word(2)? != 0 {
        return Err("call denied (MSG_DENIED)".into());
    }
    // Verifier: flavor, length, then the opaque body padded to 4 bytes.
    let verf_len = word(4)? as usize;
    let next = 5 + verf_len.div_ceil(4);
    match word(next)? {
        0 => word(next + 1),
        stat => Err(format!(
            "rpcbind did not accept the call (accept_stat {stat})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_layout() {
        let c = encode_getport(0x01020304, NSM_PROGRAM, NSM_VERSION, IPPROTO_UDP);
        assert_eq!(c.len(), 56);
        assert_eq!(&c[..4], &[1, 2, 3, 4]);
        assert_eq!(&c[12..16], &100_000u32.to_be_bytes());
        assert_eq!(&c[40..44], &100_024u32.to_be_bytes());
        assert_eq!(&c[48..52], &17u32.to_be_bytes());
    }

    #[test]
    fn decodes_replies() {
        let reply = |xid: u32, words: &[u32]| -> Vec<u8> {
            std::iter::once(xid)
                .chain(words.iter().copied())
                .flat_map(|w| w.to_be_bytes())
                .collect()
        };
        // REPLY, MSG_ACCEPTED, AUTH_NULL verifier, SUCCESS, port
        assert_eq!(
            decode_getport_reply(7, &reply(7, &[1, 0, 0, 0, 0, 57322])),
            Ok(57322)
        );
        assert_eq!(
            decode_getport_reply(7, &reply(7, &[1, 0, 0, 0, 0, 0])),
            Ok(0)
        );
        assert!(decode_getport_reply(8, &reply(7, &[1, 0, 0, 0, 0, 1])).is_err());
        assert!(decode_getport_reply(7, &reply(7, &[1, 1])).is_err());
        assert!(decode_getport_reply(7, &reply(7, &[1, 0, 0, 0, 1])).is_err());
        assert!(decode_getport_reply(7, &[0, 0]).is_err());
    }

    #[test]
    fn rpcbind_is_local_port_111() {
        assert_eq!(rpcbind_addr(), "127.0.0.1:111".parse().unwrap());
    }

    #[test]
    fn no_rpcbind_is_an_error_not_a_hang() {
        // A port on loopback with nothing bound: the connected UDP socket gets ECONNREFUSED
        // (or, at worst, the timeout); either way an error within the bound.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let start = std::time::Instant::now();
        let r = getport(
            addr,
            NSM_PROGRAM,
            NSM_VERSION,
            IPPROTO_UDP,
            Duration::from_millis(300),
        );
        assert!(r.is_err(), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
