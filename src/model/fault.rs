//! Whose fault an error is: the one classification every module's error type
//! reports (`fault()`), and the one the HTTP error mapping reads.

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The request or its bytes are wrong (a 4xx): retrying the same request
    /// will fail the same way.
    Client,
    /// Our bug or a broken invariant (a 500): details are logged, never sent.
    Server,
    /// A resource is exhausted or unreachable (overload, storage full or
    /// read-only, cluster cut off): retrying later may succeed (503, 507).
    Unavailable,
}
