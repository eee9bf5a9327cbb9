//! Requests only a stream's leader answers: the reads a write decides on
//! (`STREAM.MSG.GET`, also a bounded replica's cold reads) and the index
//! writes themselves.
//!
//! A leader that steps down drops the requests in flight, and until its
//! successor is elected (tens of milliseconds) the stream's peers answer
//! "JetStream system temporarily unavailable" (10008). nats-server steps
//! down every stream leader its server holds on a rolling restart
//! (lame-duck mode) and on `nats stream cluster step-down`. Asked once with
//! the whole [`REQUEST_TIMEOUT`], such a request made the upload that sent
//! it wait 2 s and answer 503 (measured: every upload right after a
//! step-down, before the reads were asked again; 2 of 889 sent during
//! one, before the writes were sent again). So both are sent again, on one plan
//! ([`attempt`]): a dropped request costs a quarter of a second, a refusal
//! a pause of 20 ms and more, a slow leader still gets up to the request
//! timeout, and a stream with no leader for [`PATIENCE`] (its server died:
//! elections then take 4-9 s) is still `Unavailable`, a 503 with
//! Retry-After within the commit's deadline.
//!
//! A read changes nothing, so asking again is safe. A write that got no
//! answer may still land, so each write carries its own message id
//! (`Nats-Msg-Id`) and is sent again unchanged: JetStream checks the id
//! before the expected revision and answers a copy of a stored write with
//! that write's sequence (`duplicate`), or 10158 while the first is still
//! in flight — a write lands at most once and its sender learns where.

use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{message::StreamMessage, ErrorCode};
use bytes::Bytes;

use super::connect::REQUEST_TIMEOUT;
use super::keys::INDEX_BUCKET;
use super::NatsStore;
use crate::backoff::Doubling;
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
    const WAIT: Doubling = Doubling::new(Duration::from_millis(250), REQUEST_TIMEOUT);
    const PAUSE: Doubling = Doubling::new(Duration::from_millis(20), Duration::from_millis(320));
    (WAIT.nth(n), PAUSE.nth(n))
}

/// The server saying its cluster or the stream's leadership is in flux
/// (10008, 10009): a read is asked again, a write sent again.
const IN_FLUX: [ErrorCode; 2] = [
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::CLUSTER_NOT_LEADER,
];

/// A failed attempt worth repeating: no answer, or the server saying its
/// cluster or this stream's leadership is in flux.
fn transient(kind: &LastRawMessageErrorKind) -> bool {
    match kind {
        LastRawMessageErrorKind::Other => true,
        LastRawMessageErrorKind::JetStream(e) => IN_FLUX.contains(&e.error_code()),
        LastRawMessageErrorKind::NoMessageFound | LastRawMessageErrorKind::InvalidSubject => false,
    }
}

/// What a refused or unanswered conditional write means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Another write to the key came first (10071; 10164: the clustered
    /// leader's form while that write is still in flight): re-read, try
    /// again.
    Lost,
    /// Nothing says whether it landed, or it is still in flight: no answer,
    /// no server taking it ("no responders", which async-nats reports as
    /// `StreamNotFound`), the cluster or the leader in flux (10008, 10009,
    /// 10163: a new leader not yet able to check revisions), or this very
    /// write in flight (10158): send it again, same message id.
    InDoubt,
    /// Anything else is an error.
    Failed,
}

/// One attempt's outcome on the plan ([`NatsStore::on_plan`]).
pub(super) enum Answer<T> {
    /// Finished: the answer or an error not worth repeating.
    Done(Result<T, StoreError>),
    /// Worth another attempt, and why.
    Again(String),
}

/// The first JetStream API error code in `e`'s chain of sources.
fn js_code(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(js) = err.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(js.error_code().0);
        }
        source = err.source();
    }
    None
}

fn refusal(e: &PublishError) -> Refusal {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => return Refusal::Lost,
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe => return Refusal::InDoubt,
        _ => {}
    }
    match js_code(e) {
        Some(10071 | 10164) => Refusal::Lost,
        Some(10158 | 10163) => Refusal::InDoubt,
        Some(c) if IN_FLUX.contains(&ErrorCode(c)) => Refusal::InDoubt,
        _ => Refusal::Failed,
    }
}

/// Is an alias claim (`kv.create`, create-if-absent) tried again from a
/// fresh read? When the key exists (`AlreadyExists`, said only when the
/// client's follow-up read sees it), when the write lost a race, and when
/// it is in doubt: the claim carries no message id, so the re-read decides
/// (an alias that landed names this claim's primary, which the retry then
/// uses).
pub(super) fn claim_again(e: &kv::CreateError) -> bool {
    if e.kind() == kv::CreateErrorKind::AlreadyExists {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(p) = err.downcast_ref::<PublishError>() {
            return refusal(p) != Refusal::Failed;
        }
        if let Some(u) = err.downcast_ref::<kv::UpdateError>() {
            if u.kind() == kv::UpdateErrorKind::TimedOut {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// A fresh message id: 128 random bits.
fn write_id() -> String {
    let mut id = [0u8; 16];
    let _ = getrandom::fill(&mut id);
    hex::encode(id)
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
        self.on_plan(
            what,
            "leader read not answered; asking again",
            |wait| async move {
                match tokio::time::timeout(wait, stream.get_last_raw_message_by_subject(subject))
                    .await
                {
                    Ok(Ok(m)) => Answer::Done(Ok(Some(m))),
                    Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        Answer::Done(Ok(None))
                    }
                    Ok(Err(e)) if !transient(&e.kind()) => Answer::Done(Err(self.fail(what)(e))),
                    Ok(Err(e)) => Answer::Again(e.to_string()),
                    Err(_) => Answer::Again(format!("no answer within {wait:?}")),
                }
            },
        )
        .await
    }

    /// Runs `once` on the plan of [`attempt`]s: it gets each attempt's wait
    /// for an answer (to bound its own request by, or not) and says whether
    /// it is done or worth another attempt (and why: the debug log line
    /// `log`, and the error when [`PATIENCE`] runs out).
    pub(super) async fn on_plan<T, Fut>(
        &self,
        what: &'static str,
        log: &'static str,
        mut once: impl FnMut(Duration) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Answer<T>>,
    {
        let started = Instant::now();
        let mut n = 0;
        loop {
            let (wait, pause) = attempt(n);
            n += 1;
            let e = match once(wait.min(PATIENCE.saturating_sub(started.elapsed()))).await {
                Answer::Done(r) => return r,
                Answer::Again(e) => e,
            };
            if started.elapsed() + pause >= PATIENCE {
                return Err(self.fail(what)(format!("{e} (tried for {PATIENCE:?})")));
            }
            tracing::debug!(what, error = %e, "{log}");
            tokio::time::sleep(pause).await;
        }
    }

    /// Write `value` to KV key `key` of the index (`None`: delete it) if its
    /// revision is still `expect` (0 = never written). `Ok(None)`: another
    /// write came first: re-read and try again. A write in doubt is sent
    /// again with its message id (see the module) until [`PATIENCE`] runs
    /// out.
    pub(super) async fn write_if(
        &self,
        key: &str,
        expect: u64,
        value: Option<Bytes>,
    ) -> Result<Option<u64>, StoreError> {
        self.write(key, Some(expect), value).await
    }

    /// Write `value` to KV key `key` of the index whatever its revision (an
    /// alias re-pointed after a merge), sent again while in doubt as
    /// [`NatsStore::write_if`] is.
    pub(super) async fn put_index(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        match self.write(key, None, Some(value)).await? {
            Some(revision) => Ok(revision),
            None => Err(StoreError::Index(format!(
                "an unconditional write to {key} was refused as a lost race"
            ))),
        }
    }

    async fn write(
        &self,
        key: &str,
        expect: Option<u64>,
        value: Option<Bytes>,
    ) -> Result<Option<u64>, StoreError> {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(expect) = expect {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expect.to_string().as_str(),
            );
        }
        headers.insert(async_nats::header::NATS_MESSAGE_ID, write_id().as_str());
        if value.is_none() {
            headers.insert("KV-Operation", "DEL");
        }
        let subject = format!("$KV.{INDEX_BUCKET}.{key}");
        let payload = value.unwrap_or_default();
        let js = &self.inner.js;
        let (subject, headers, payload) = (&subject, &headers, &payload);
        self.on_plan(
            "index write",
            "index write in doubt; sending it again",
            |wait| async move {
                let send = async {
                    js.publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                        .await?
                        .await
                };
                match tokio::time::timeout(wait, send).await {
                    Ok(Ok(ack)) => Answer::Done(Ok(Some(ack.sequence))),
                    Ok(Err(e)) => match refusal(&e) {
                        Refusal::Lost => Answer::Done(Ok(None)),
                        Refusal::Failed => Answer::Done(Err(self.fail("index write")(e))),
                        Refusal::InDoubt => Answer::Again(e.to_string()),
                    },
                    Err(_) => Answer::Again(format!("no answer within {wait:?}")),
                }
            },
        )
        .await
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

    /// A JetStream API error as the server sends it.
    fn server(err_code: u64, description: &str) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": err_code, "description": description,
        }))
        .unwrap()
    }

    /// How async-nats 0.51 wraps a refused publish ack: only 10071 gets its
    /// own kind.
    fn ack(err_code: u64, description: &str) -> PublishError {
        let kind = if err_code == 10071 {
            PublishErrorKind::WrongLastSequence
        } else {
            PublishErrorKind::Other
        };
        PublishError::with_source(kind, server(err_code, description))
    }

    #[test]
    fn refused_writes_are_lost_in_doubt_or_failed() {
        use kv::{CreateError, CreateErrorKind, UpdateError, UpdateErrorKind};
        use Refusal::*;
        for (err_code, description, want) in [
            (10071, "wrong last sequence: 41", Lost),
            (10164, "wrong last sequence", Lost),
            (
                10163,
                "expected last sequence per subject temporarily unavailable",
                InDoubt,
            ),
            (10158, "duplicate message id is in process", InDoubt),
            (10008, "JetStream system temporarily unavailable", InDoubt),
            (10009, "JetStream cluster not available", InDoubt),
            (10054, "message size exceeds maximum allowed", Failed),
            (10077, "maximum messages exceeded", Failed),
        ] {
            assert_eq!(refusal(&ack(err_code, description)), want, "{err_code}");
            // kv.create: the refused update, when its follow-up read does not
            // see the winner yet.
            let create = CreateError::from(UpdateError::from(ack(err_code, description)));
            assert_eq!(claim_again(&create), want != Failed, "create, {err_code}");
        }
        // No answer, no server taking it, a dropped connection: in doubt.
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::BrokenPipe,
        ] {
            assert_eq!(refusal(&PublishError::new(kind)), InDoubt, "{kind}");
            let create = CreateError::from(UpdateError::from(PublishError::new(kind)));
            assert!(claim_again(&create), "create, {kind}");
        }
        assert_eq!(refusal(&PublishError::new(PublishErrorKind::Other)), Failed);
        assert!(claim_again(&CreateError::new(
            CreateErrorKind::AlreadyExists
        )));
        assert!(claim_again(&CreateError::from(UpdateError::new(
            UpdateErrorKind::TimedOut
        ))));
        assert!(!claim_again(&CreateError::new(CreateErrorKind::Publish)));
        assert!(!claim_again(&CreateError::new(CreateErrorKind::InvalidKey)));
    }

    #[test]
    fn write_ids_are_fresh_128_bit_hex() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| write_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids
            .iter()
            .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
