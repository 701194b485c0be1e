//! An error and its causes on one line, for messages a person reads.

/// `error: cause: cause's cause`, following [`std::error::Error::source`].
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to reach rpcbind")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_every_cause() {
        let inner = std::io::Error::other("connection refused");
        assert_eq!(
            error_chain(&Outer(inner)),
            "failed to reach rpcbind: connection refused"
        );
        let alone = std::io::Error::other("alone");
        assert_eq!(error_chain(&alone), "alone");
    }
}
