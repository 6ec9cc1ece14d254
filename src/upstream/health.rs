//! Whether an upstream as a whole answers, as opposed to one repository failing: `GET /v2/` (the
//! registry's own endpoint) answering with anything below 500 means it is up, whatever a single
//! repository's manifest returned. The circuit breaker counts a repository's 5xx only when this
//! check fails too, so a client asking again and again for one broken repository cannot take
//! the whole upstream down for everybody. Checks are shared: concurrent callers wait for one,
//! and a result is reused for a second.

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::client::HttpClient;
use super::deadline::AnswerDeadline;
use super::USER_AGENT;

const REUSE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Health {
    last: Mutex<Option<(Instant, bool)>>,
}

impl Health {
    /// Whether `GET <base>/v2/` answers below 500 within `timeout` (a recent answer is reused).
    pub(super) async fn answers(&self, client: &HttpClient, base: &str, timeout: AnswerDeadline) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, up)) = *last {
            if at.elapsed() < REUSE {
                return up;
            }
        }
        let up = v2_answers(client, base, timeout).await;
        *last = Some((Instant::now(), up));
        up
    }
}

/// One `GET <base>/v2/`: true for any answer below 500 (401 included: it is alive).
pub(super) async fn v2_answers(client: &HttpClient, base: &str, timeout: AnswerDeadline) -> bool {
    let Ok(req) = Request::get(format!("{base}/v2/"))
        .header(http::header::USER_AGENT, USER_AGENT)
        .body(Full::default())
    else {
        return false;
    };
    matches!(
        timeout.within(client.request(req)).await,
        Some(Ok(resp)) if !resp.status().is_server_error()
    )
}
