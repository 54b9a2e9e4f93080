//! The table runner. A case is the exact bytes a client sends on a fresh connection, what
//! it must get back, and what the backend must receive; a case may allow more than one
//! outcome (say, a framing read one way and re-framed, or refused). Every case runs; a
//! theme fails listing each case that failed, with the bytes sent, what the client got and
//! what the backend got.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Site;
use crate::support::raw::{self, Exchange, Received, View, escape};

/// How long the backend must stay silent before a case's traffic is taken as all of it.
pub const BACKEND_QUIET: Duration = Duration::from_millis(60);

/// What the client must get.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Exactly these statuses, in order, and nothing more.
    Statuses(&'static [u16]),
    /// One response with any of these statuses, and nothing more.
    OneOf(&'static [u16]),
    /// No response at all, and the connection closed.
    Nothing,
}

/// What the backend must receive.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// Not one byte.
    Nothing,
    /// No complete request (the head of a request whose body then failed may arrive).
    NoCompleteRequest,
    /// Exactly these requests, in order, each passing its checks; nothing else.
    Requests(Vec<Vec<Check>>),
}

/// One thing a request at the backend must show.
#[derive(Debug, Clone)]
pub enum Check {
    /// The request line's target.
    Target(String),
    Method(String),
    /// Exactly one field of this name, with exactly this value.
    Header(&'static str, String),
    /// Exactly one field of this name, whose value contains this text.
    HeaderContains(&'static str, String),
    /// No field of this name.
    Absent(&'static str),
    /// The body, de-chunked.
    Body(Vec<u8>),
    /// The request on the wire (head and body) nowhere contains this text, in any case.
    NotOnWire(String),
}

pub fn target(path: &str) -> Check {
    Check::Target(path.to_owned())
}

pub fn method(name: &str) -> Check {
    Check::Method(name.to_owned())
}

pub fn header(name: &'static str, value: impl Into<String>) -> Check {
    Check::Header(name, value.into())
}

pub fn header_contains(name: &'static str, text: &str) -> Check {
    Check::HeaderContains(name, text.to_owned())
}

pub fn absent(name: &'static str) -> Check {
    Check::Absent(name)
}

pub fn body(bytes: impl AsRef<[u8]>) -> Check {
    Check::Body(bytes.as_ref().to_vec())
}

pub fn not_on_wire(text: &str) -> Check {
    Check::NotOnWire(text.to_owned())
}

/// One acceptable outcome of a case.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub answer: Answer,
    /// The connection must be closed after the answer.
    pub closes: bool,
    pub upstream: Upstream,
}

/// One hostile input and its acceptable outcomes.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    /// What the case guards against.
    pub what: &'static str,
    pub request: Vec<u8>,
    pub outcomes: Vec<Outcome>,
}

impl Case {
    /// A case whose first outcome is, until changed: a 400, and nothing at the backend.
    pub fn new(name: &'static str, what: &'static str, request: impl AsRef<[u8]>) -> Case {
        Case {
            name,
            what,
            request: request.as_ref().to_vec(),
            outcomes: vec![refused()],
        }
    }

    fn last(&mut self) -> &mut Outcome {
        self.outcomes.last_mut().expect("an outcome")
    }

    /// The client gets exactly these statuses, in order.
    pub fn answers(mut self, statuses: &'static [u16]) -> Case {
        self.last().answer = Answer::Statuses(statuses);
        self
    }

    /// The client gets one response, with any of these statuses.
    pub fn answers_one_of(mut self, statuses: &'static [u16]) -> Case {
        self.last().answer = Answer::OneOf(statuses);
        self
    }

    /// The client gets no response; the connection is closed.
    pub fn answers_nothing(mut self) -> Case {
        self.last().answer = Answer::Nothing;
        self.last().closes = true;
        self
    }

    /// The connection is closed after the answer.
    pub fn closes(mut self) -> Case {
        self.last().closes = true;
        self
    }

    /// The backend gets exactly one request, passing `checks`.
    pub fn reaches(mut self, checks: Vec<Check>) -> Case {
        self.last().upstream = Upstream::Requests(vec![checks]);
        self
    }

    /// The backend gets no complete request.
    pub fn reaches_no_complete_request(mut self) -> Case {
        self.last().upstream = Upstream::NoCompleteRequest;
        self
    }

    /// Another acceptable outcome, which starts as a 400 with nothing at the backend.
    pub fn or(mut self) -> Case {
        self.outcomes.push(refused());
        self
    }
}

fn refused() -> Outcome {
    Outcome {
        answer: Answer::Statuses(&[400]),
        closes: false,
        upstream: Upstream::Nothing,
    }
}

/// Whether `exchange` is `answer` (and closed, when it must be).
pub fn judge_answer(answer: &Answer, closes: bool, exchange: &Exchange) -> Result<(), String> {
    let statuses = exchange.statuses();
    let fits = match answer {
        Answer::Statuses(wanted) => statuses == *wanted,
        Answer::OneOf(allowed) => statuses.len() == 1 && allowed.contains(&statuses[0]),
        Answer::Nothing => statuses.is_empty(),
    };
    if !fits {
        return Err(format!("the client should get {answer:?}"));
    }
    if closes && !exchange.closed {
        return Err("the connection should be closed".to_owned());
    }
    Ok(())
}

/// Whether the backend's `view` is `upstream`, and every request in it is well formed.
pub fn judge_upstream(upstream: &Upstream, view: &View) -> Result<(), String> {
    for request in &view.requests {
        hygiene(request)?;
    }
    match upstream {
        Upstream::Nothing if view.byte_count() > 0 => {
            Err("the backend should receive nothing".to_owned())
        }
        Upstream::NoCompleteRequest if !view.requests.is_empty() => {
            Err("the backend should receive no complete request".to_owned())
        }
        Upstream::Nothing | Upstream::NoCompleteRequest => Ok(()),
        Upstream::Requests(wanted) => {
            if !view.fragments.is_empty() {
                return Err("the backend got bytes that make no complete request".to_owned());
            }
            if view.requests.len() != wanted.len() {
                return Err(format!(
                    "the backend should receive {} request(s), not {}",
                    wanted.len(),
                    view.requests.len()
                ));
            }
            for (request, checks) in view.requests.iter().zip(wanted) {
                for check in checks {
                    check_request(request, check)?;
                }
            }
            Ok(())
        }
    }
}

fn check_request(request: &Received, check: &Check) -> Result<(), String> {
    let fail = |what: String| Err(format!("request {}: {what}", request.request_line));
    match check {
        Check::Target(wanted) if request.target() != wanted => {
            fail(format!("the target should be {wanted}"))
        }
        Check::Method(wanted) if request.method() != wanted => {
            fail(format!("the method should be {wanted}"))
        }
        Check::Header(name, wanted) => {
            let values = request.values(name);
            if values != [wanted.as_str()] {
                return fail(format!("{name} should be just {wanted:?}, not {values:?}"));
            }
            Ok(())
        }
        Check::HeaderContains(name, text) => {
            let values = request.values(name);
            if values.len() != 1 || !values[0].contains(text.as_str()) {
                return fail(format!("one {name} containing {text:?}, not {values:?}"));
            }
            Ok(())
        }
        Check::Absent(name) => {
            let values = request.values(name);
            if !values.is_empty() {
                return fail(format!("{name} should be absent, not {values:?}"));
            }
            Ok(())
        }
        Check::Body(wanted) if &request.body != wanted => fail(format!(
            "the body should be {}, not {}",
            escape(wanted),
            escape(&request.body)
        )),
        Check::NotOnWire(text) => {
            let wire = String::from_utf8_lossy(&request.wire()).to_ascii_lowercase();
            if wire.contains(&text.to_ascii_lowercase()) {
                return fail(format!("{text:?} should not be on the wire"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a request reached the backend in one unambiguous form: CRLF line ends only, no
/// NUL, no folded lines, token header names with nothing before the colon, one Host, and
/// a request line of three parts.
pub fn hygiene(request: &Received) -> Result<(), String> {
    let head = &request.head;
    let problem = if head.contains(&0) {
        Some("a NUL")
    } else if head
        .iter()
        .enumerate()
        .any(|(at, &b)| b == b'\n' && (at == 0 || head[at - 1] != b'\r'))
    {
        Some("a bare LF")
    } else if head
        .iter()
        .enumerate()
        .any(|(at, &b)| b == b'\r' && head.get(at + 1) != Some(&b'\n'))
    {
        Some("a bare CR")
    } else if head
        .windows(2)
        .any(|w| w[0] == b'\n' && matches!(w[1], b' ' | b'\t'))
    {
        Some("a folded line")
    } else if request.headers.iter().any(|(name, _)| !is_token(name)) {
        Some("a header name that is not a token")
    } else if request.values("host").len() != 1 {
        Some("not exactly one Host")
    } else if request.request_line.split(' ').count() != 3 {
        Some("a request line that is not three parts")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!(
            "the request at the backend has {problem}: {}",
            escape(head)
        )),
        None => Ok(()),
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Runs `cases` one at a time, each on a fresh plain-HTTP connection to the site, and
/// panics listing every case that failed.
pub async fn run(site: &Site, theme: &str, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        site.backend.reset();
        let exchange = raw::exchange(site.http(), &case.request).await;
        let view = site.backend.settle(BACKEND_QUIET, Duration::from_secs(2));
        if let Some(failure) = judge(theme, case, &exchange, &view) {
            failures.push(failure);
        }
    }
    finish(theme, cases.len(), &failures);
}

/// Judges one case: `None` when an outcome fits, else the failure with its evidence. Also
/// prints the case's result (shown with `--nocapture`, or when the theme fails).
pub fn judge(theme: &str, case: &Case, exchange: &Exchange, view: &View) -> Option<String> {
    let mut reasons = Vec::new();
    for outcome in &case.outcomes {
        let verdict = judge_answer(&outcome.answer, outcome.closes, exchange)
            .and_then(|()| judge_upstream(&outcome.upstream, view));
        match verdict {
            Ok(()) => {
                println!(
                    "{theme}/{}: ok: {}; {}",
                    case.name,
                    exchange.describe(),
                    view.describe()
                );
                return None;
            }
            Err(reason) => reasons.push(reason),
        }
    }
    let mut failure = format!("{theme}/{} ({}):", case.name, case.what);
    let _ = write!(failure, "\n  expected: {}", reasons.join("; or "));
    let _ = write!(failure, "\n  sent: {}", escape(&case.request));
    let _ = write!(failure, "\n  {}", exchange.describe());
    let _ = write!(failure, "\n  {}", view.describe());
    println!("{failure}");
    Some(failure)
}

/// Panics with every failure, or prints that all `total` cases passed.
pub fn finish(theme: &str, total: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {total} {theme} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    println!("{theme}: all {total} cases passed");
}
