//! Reads answered by a stream's leader alone (`STREAM.MSG.GET`): every read
//! a write decides on, and a bounded replica's cold reads.
//!
//! A leader that steps down drops the requests in flight, and until its
//! successor is elected (tens of milliseconds) the stream's peers answer
//! "JetStream system temporarily unavailable" (10008). nats-server steps
//! down every stream leader its server holds on a rolling restart
//! (lame-duck mode) and on `nats stream cluster step-down`. Asked once with
//! the whole [`REQUEST_TIMEOUT`], such a read made the upload that asked it
//! wait 2 s and answer 503 (every upload right after a step-down, measured
//! before this module). A read changes nothing, so it is asked again
//! ([`attempt`]): a dropped request costs a quarter of a second, a refusal a
//! pause of 20 ms and more, a slow leader still gets up to the request
//! timeout, and a stream with no leader for [`PATIENCE`] (its server died:
//! elections then take 4-9 s) is still `Unavailable`, a 503 with
//! Retry-After within the commit's deadline.

use std::time::{Duration, Instant};

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{message::StreamMessage, ErrorCode};

use super::connect::REQUEST_TIMEOUT;
use super::NatsStore;
use crate::store::StoreError;

/// How long a leader read keeps asking: within the commit's deadline
/// (4.5 s), below a stream leader's election after its server died (4-9 s:
/// that stays a 503 with Retry-After).
pub(super) const PATIENCE: Duration = Duration::from_secs(3);

/// Attempt `n` (from 0): how long it waits for its answer (a slow leader
/// gets longer each time, up to the request timeout), and the pause before
/// the next when it failed (a server saying its cluster is in flux answers
/// in a millisecond; asking again at once would only repeat that).
pub(super) fn attempt(n: u32) -> (Duration, Duration) {
    let wait = Duration::from_millis(250 << n.min(3));
    let pause = Duration::from_millis(20 << n.min(4));
    (wait.min(REQUEST_TIMEOUT), pause)
}

/// A failed attempt worth repeating: no answer, or the server saying its
/// cluster or this stream's leadership is in flux.
fn transient(kind: &LastRawMessageErrorKind) -> bool {
    match kind {
        LastRawMessageErrorKind::Other => true,
        LastRawMessageErrorKind::JetStream(e) => [
            ErrorCode::CLUSTER_NOT_AVAILABLE,
            ErrorCode::CLUSTER_NOT_LEADER,
        ]
        .contains(&e.error_code()),
        LastRawMessageErrorKind::NoMessageFound | LastRawMessageErrorKind::InvalidSubject => false,
    }
}

impl NatsStore {
    /// The last message on `subject` in `stream`, from the stream's leader
    /// (`None`: no message), asked again while the leader does not answer.
    pub(super) async fn leader_last(
        &self,
        stream: &Stream,
        subject: &str,
        what: &'static str,
    ) -> Result<Option<StreamMessage>, StoreError> {
        let started = Instant::now();
        let mut n = 0;
        loop {
            let (wait, pause) = attempt(n);
            n += 1;
            let wait = wait.min(PATIENCE.saturating_sub(started.elapsed()));
            let e =
                match tokio::time::timeout(wait, stream.get_last_raw_message_by_subject(subject))
                    .await
                {
                    Ok(Ok(m)) => return Ok(Some(m)),
                    Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        return Ok(None)
                    }
                    Ok(Err(e)) if !transient(&e.kind()) => return Err(self.fail(what)(e)),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {wait:?}"),
                };
            if started.elapsed() + pause >= PATIENCE {
                return Err(self.fail(what)(format!("{e} (asked for {PATIENCE:?})")));
            }
            tracing::debug!(what, error = %e, "leader read not answered; asking again");
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_wait_longer_up_to_the_request_timeout_within_the_deadline() {
        let plan: Vec<_> = (0..8).map(attempt).collect();
        assert_eq!(
            plan[0],
            (Duration::from_millis(250), Duration::from_millis(20))
        );
        assert!(plan
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(
            plan[7].0, REQUEST_TIMEOUT,
            "a slow leader gets the request timeout"
        );
        assert!(plan[7].1 < Duration::from_millis(500), "never a long pause");
        // Room for the writes after the reads, within the commit's deadline.
        assert!(PATIENCE + REQUEST_TIMEOUT / 4 < super::super::COMMIT_DEADLINE);
    }

    #[test]
    fn only_an_unanswered_or_leaderless_read_is_asked_again() {
        let js = |code: u64| {
            let e = serde_json::json!({"code": 503, "err_code": code, "description": "x"});
            LastRawMessageErrorKind::JetStream(serde_json::from_value(e).unwrap())
        };
        for (kind, again) in [
            (LastRawMessageErrorKind::Other, true),
            (js(10008), true),
            (js(10009), true),
            (js(10059), false), // stream not found
            (LastRawMessageErrorKind::NoMessageFound, false),
            (LastRawMessageErrorKind::InvalidSubject, false),
        ] {
            assert_eq!(transient(&kind), again, "{kind:?}");
        }
    }
}
