//! gRPC specifics: the `grpc-timeout` deadline and gRPC-shaped local answers.
//!
//! A gRPC client reads the call's outcome from `grpc-status`, not from the HTTP status, so
//! a plain-text 503 from a proxy reaches the application as a confusing protocol error.
//! Like Envoy, Sluice answers gRPC requests (`content-type: application/grpc…`) with HTTP
//! 200 and a trailers-only response carrying `grpc-status` and `grpc-message`.

use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::LocalAnswer;
use super::body::ResponseBody;

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC status codes Sluice answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GrpcCode {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// Whether the request is a gRPC call.
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The call's deadline from `grpc-timeout` (1 to 8 digits and a unit: `H`, `M`, `S`, `m`,
/// `u`, `n`), or `None` when absent or malformed.
pub(super) fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount.checked_mul(3600)?),
        b'M' => Duration::from_secs(amount.checked_mul(60)?),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl LocalAnswer {
    /// The gRPC status for this answer, following the gRPC HTTP-to-status mapping, except
    /// that a timeout says DEADLINE_EXCEEDED and a refused size or rate says
    /// RESOURCE_EXHAUSTED, which tell a client more than UNAVAILABLE would.
    pub(super) fn grpc_code(self) -> GrpcCode {
        match self {
            LocalAnswer::BadRequest
            | LocalAnswer::NotImplemented
            | LocalAnswer::ClientBodyFailed => GrpcCode::Internal,
            LocalAnswer::ClientBodyTimeout => GrpcCode::DeadlineExceeded,
            LocalAnswer::NoRoute => GrpcCode::Unimplemented,
            LocalAnswer::PayloadTooLarge | LocalAnswer::TooManyRequests => {
                GrpcCode::ResourceExhausted
            }
            LocalAnswer::UpstreamTimeout => GrpcCode::DeadlineExceeded,
            LocalAnswer::ClientCertificateRequired | LocalAnswer::Forbidden => {
                GrpcCode::PermissionDenied
            }
            LocalAnswer::Unauthorized => GrpcCode::Unauthenticated,
            LocalAnswer::MisdirectedRequest => GrpcCode::Unavailable,
            // gRPC clients do not follow redirects; the spec maps other statuses to UNKNOWN.
            LocalAnswer::HttpsRedirect | LocalAnswer::AuthRedirect(_) => GrpcCode::Unknown,
            LocalAnswer::NoEndpoints
            | LocalAnswer::UpstreamFailed
            | LocalAnswer::PolicyUnavailable
            | LocalAnswer::LimitUnavailable
            | LocalAnswer::UpstreamUnavailable
            | LocalAnswer::AuthBusy => GrpcCode::Unavailable,
        }
    }
}

/// Turns a local answer into a trailers-only gRPC response, keeping its other headers
/// (rate-limit headers, `Retry-After`) and its end-of-request bookkeeping.
pub(super) fn reshape(
    response: Response<ResponseBody>,
    answer: LocalAnswer,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    parts.status = StatusCode::OK;
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts
        .headers
        .insert(&GRPC_STATUS, HeaderValue::from(answer.grpc_code() as u16));
    let message = percent_encode(answer.text().trim_end());
    if let Ok(message) = HeaderValue::from_str(&message) {
        parts.headers.insert(&GRPC_MESSAGE, message);
    }
    Response::from_parts(parts, body.emptied())
}

/// `grpc-message` encoding: printable ASCII except `%` as is, everything else as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(&GRPC_TIMEOUT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn grpc_timeouts_parse_every_unit() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789S", None),
            ("S", None),
            ("10s", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for (value, expected) in cases {
            assert_eq!(timeout(&with_timeout(value)), expected, "{value}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn local_answers_become_trailers_only_grpc_responses() {
        let response = reshape(
            LocalAnswer::UpstreamTimeout.response(),
            LocalAnswer::UpstreamTimeout,
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "4");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert!(response.headers().get(CONTENT_LENGTH).is_none());
        assert!(
            response.headers()["grpc-message"]
                .to_str()
                .unwrap()
                .starts_with("504 gateway timeout")
        );
        assert!(http_body::Body::is_end_stream(response.body()));
        assert_eq!(LocalAnswer::NoEndpoints.grpc_code(), GrpcCode::Unavailable);
        assert_eq!(percent_encode("a%b\u{e9}"), "a%25b%C3%A9");
    }
}
