use std::time::Duration;

use super::SourceStatus;

/// Why a source could not answer. The fan-out adds the source's name when it logs one.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The upstream itself refused (`429`, or a rate-limit `403`), or paused us with `Retry-After`.
    #[error("the upstream is rate limiting us")]
    RateLimited { retry_after: Option<Duration> },
    /// Our own limiter refused the call before any request: the source's budget is spent, or an
    /// earlier `Retry-After` still pauses it. Told apart from [`Self::RateLimited`] in logs and
    /// metrics; a client sees `rate_limited` for both.
    #[error("our own budget for this source is spent for now")]
    OverBudget { retry_after: Option<Duration> },
    #[error("the upstream answered HTTP {status}")]
    Status { status: u16 },
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(String),
    #[error("the upstream could not be reached: {0}")]
    Transport(String),
    /// The upstream says the person objected to processing (HTTP 451): the whole result is withheld.
    #[error("the upstream reports that the person objected to processing")]
    Objected,
    /// Refused before any request (breaker open, out of budget, guard refused the target).
    #[error("the call was not made: {0}")]
    NotAttempted(&'static str),
    /// What a host that the client chose did (see [`super::per_host`]): reported as that error, but
    /// it neither pauses the source nor counts against its breaker, since one host's trouble is not
    /// the source's.
    #[error("{0} (a host the client chose)")]
    Host(Box<SourceError>),
}

impl SourceError {
    /// A body that is not the JSON expected, told by kind and place only: serde's own message
    /// quotes the values it met, which may be a person's, and errors are logged.
    pub fn invalid_json(e: &serde_json::Error) -> Self {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "JSON of an unexpected shape",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        Self::Malformed(format!(
            "{kind} at line {}, column {}",
            e.line(),
            e.column()
        ))
    }

    /// Whether trying again later may help.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Timeout
            | Self::RateLimited { .. }
            | Self::OverBudget { .. }
            | Self::Transport(_) => true,
            Self::Status { status } => *status >= 500 || *status == 408,
            Self::Malformed(_) | Self::Objected | Self::NotAttempted(_) => false,
            Self::Host(inner) => inner.retryable(),
        }
    }

    /// Whether the failure says something about the source as a whole, so that its breaker counts
    /// it: a retryable failure, unless it came from a host the client chose.
    pub fn counts_against_source(&self) -> bool {
        !matches!(self, Self::Host(_)) && self.retryable()
    }

    /// Who limited the call: `us` (our own limiter or pause) or `upstream` (its own answer); `None`
    /// for any other failure. The label of `enrichd_source_rate_limited_total`.
    pub fn limited_by(&self) -> Option<&'static str> {
        match self {
            Self::OverBudget { .. } => Some("us"),
            Self::RateLimited { .. } => Some("upstream"),
            Self::Host(inner) => inner.limited_by(),
            _ => None,
        }
    }

    pub fn status(&self) -> SourceStatus {
        match self {
            Self::Timeout => SourceStatus::Timeout,
            Self::RateLimited { .. } | Self::OverBudget { .. } => SourceStatus::RateLimited,
            Self::NotAttempted(_) => SourceStatus::Skipped,
            Self::Objected => SourceStatus::Miss,
            Self::Status { .. } | Self::Malformed(_) | Self::Transport(_) => SourceStatus::Error,
            Self::Host(inner) => inner.status(),
        }
    }
}
