//! The closed vocabularies of a submission attempt: how it ended (`lead.outcome`), why it
//! did not succeed (`lead.reason`) and which field was at fault (`lead.field`).
//!
//! These are enums rather than strings so that span attributes, metric labels, HTTP
//! statuses and the OpenAPI spec can only ever use the values listed here; dashboards and
//! the daily analysis group by them, so an ad-hoc string would be a silent new series.

/// HTTP status of an accepted lead. `Outcome::Accepted` carries no [`Reason`], so its
/// status lives here rather than in [`Reason::http_status`].
pub const ACCEPTED_STATUS: u16 = 201;

crate::closed_set! {
    /// How a submission attempt ended.
    #[derive(poem_openapi::Enum)]
    #[oai(rename_all = "snake_case")]
    pub enum Outcome {
        /// The lead was valid, new and handed on; the response is 201.
        Accepted,
        /// The client's request was refused (bad payload, credentials, limits, duplicate);
        /// retrying the same request will not help.
        Rejected,
        /// The service or a downstream system failed; the same request may succeed later.
        Failed,
    }
}

crate::closed_set! {
    /// Why an attempt was not accepted.
    #[derive(poem_openapi::Enum)]
    #[oai(rename_all = "snake_case")]
    pub enum Reason {
        /// The body is not valid UTF-8 or JSON (or form encoding), is not an object, has an
        /// unknown field while unknown fields are rejected, or the batch is empty or too long.
        InvalidPayload,
        /// A field is missing, has the wrong type or a value that does not parse; `field`
        /// names it.
        InvalidField,
        /// The `Content-Type` is not one this endpoint accepts.
        UnsupportedMediaType,
        /// The body is larger than the configured limit.
        PayloadTooLarge,
        /// No API key, or a key that matches no configured key.
        Unauthorized,
        /// The API key is valid but belongs to a different source than the lead names.
        SourceKeyMismatch,
        /// The source exists but is disabled in the configuration.
        SourceDisabled,
        /// The form id of `POST /v1/forms/{form_id}` is not configured.
        UnknownForm,
        /// The client (API key or address) exceeded its rate limit.
        RateLimited,
        /// The request body did not arrive within `http.body_read_timeout_ms`.
        RequestTimeout,
        /// The client closed the connection before the attempt ended (never answered; 499
        /// is only the recorded status, as nginx records it).
        ClientClosed,
        /// The same submitter already sent a lead from this source and page within the
        /// deduplication window.
        Duplicate,
        /// The downstream delivery did not answer in time.
        DownstreamTimeout,
        /// The downstream delivery answered with an error.
        DownstreamError,
        /// A bug or an unavailable dependency inside the service.
        InternalError,
        /// The service was at its in-flight request limit (`http.max_in_flight`).
        Overloaded,
        /// The shared state (Redis, `state.url`) did not answer, so whether the lead is a
        /// duplicate cannot be known; nothing was delivered.
        StateUnavailable,
    }
}

impl Reason {
    /// Failures are ours (worth retrying, worth paging on); rejections are the client's.
    pub fn outcome(self) -> Outcome {
        match self {
            Reason::DownstreamTimeout
            | Reason::DownstreamError
            | Reason::InternalError
            | Reason::Overloaded
            | Reason::StateUnavailable => Outcome::Failed,
            Reason::InvalidPayload
            | Reason::InvalidField
            | Reason::UnsupportedMediaType
            | Reason::PayloadTooLarge
            | Reason::Unauthorized
            | Reason::SourceKeyMismatch
            | Reason::SourceDisabled
            | Reason::UnknownForm
            | Reason::RateLimited
            | Reason::RequestTimeout
            | Reason::ClientClosed
            | Reason::Duplicate => Outcome::Rejected,
        }
    }

    /// The reason's doc comment: the plain-words meaning the API documentation shows.
    pub fn meaning(self) -> &'static str {
        strum::EnumMessage::get_documentation(&self).unwrap_or_default()
    }

    /// The HTTP status the API answers with for this reason.
    pub fn http_status(self) -> u16 {
        match self {
            Reason::InvalidPayload => 400,
            Reason::InvalidField => 422,
            Reason::UnsupportedMediaType => 415,
            Reason::PayloadTooLarge => 413,
            Reason::Unauthorized => 401,
            Reason::SourceKeyMismatch | Reason::SourceDisabled => 403,
            Reason::UnknownForm => 404,
            Reason::RateLimited => 429,
            Reason::RequestTimeout => 408,
            Reason::ClientClosed => 499,
            Reason::Duplicate => 409,
            Reason::DownstreamTimeout => 504,
            Reason::DownstreamError => 502,
            Reason::InternalError => 500,
            Reason::Overloaded | Reason::StateUnavailable => 503,
        }
    }
}

crate::closed_set! {
    /// A field of the lead API, the value of the `lead.field` attribute on invalid_field.
    #[derive(poem_openapi::Enum)]
    #[oai(rename_all = "snake_case")]
    pub enum Field {
        /// The submitter's name.
        Name,
        /// The submitter's email address.
        Email,
        /// The submitter's phone number.
        Phone,
        /// The submitter's company.
        Company,
        /// The lead source (a configured source name).
        Source,
        /// The page path the lead was submitted on.
        Page,
        /// The submitter's consent flag.
        Consent,
        /// The UTM campaign parameters (`utm` object or `utm_*` form fields).
        Utm,
        /// The client-stated submission time.
        SubmittedAt,
        /// The `leads` array of a batch.
        Leads,
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    #[test]
    fn every_reason_has_its_status_and_outcome() {
        let expected = [
            (Reason::InvalidPayload, 400, Outcome::Rejected),
            (Reason::InvalidField, 422, Outcome::Rejected),
            (Reason::UnsupportedMediaType, 415, Outcome::Rejected),
            (Reason::PayloadTooLarge, 413, Outcome::Rejected),
            (Reason::Unauthorized, 401, Outcome::Rejected),
            (Reason::SourceKeyMismatch, 403, Outcome::Rejected),
            (Reason::SourceDisabled, 403, Outcome::Rejected),
            (Reason::UnknownForm, 404, Outcome::Rejected),
            (Reason::RateLimited, 429, Outcome::Rejected),
            (Reason::RequestTimeout, 408, Outcome::Rejected),
            (Reason::ClientClosed, 499, Outcome::Rejected),
            (Reason::Duplicate, 409, Outcome::Rejected),
            (Reason::DownstreamTimeout, 504, Outcome::Failed),
            (Reason::DownstreamError, 502, Outcome::Failed),
            (Reason::InternalError, 500, Outcome::Failed),
            (Reason::Overloaded, 503, Outcome::Failed),
            (Reason::StateUnavailable, 503, Outcome::Failed),
        ];
        assert_eq!(expected.len(), Reason::ALL.len());
        for (reason, status, outcome) in expected {
            assert_eq!(reason.http_status(), status, "{reason}");
            assert_eq!(reason.outcome(), outcome, "{reason}");
        }
        assert_eq!(ACCEPTED_STATUS, 201);
    }

    #[test]
    fn every_reason_says_what_it_means() {
        for &reason in Reason::ALL {
            assert!(reason.meaning().len() > 20, "{reason} has no doc comment");
        }
        assert!(Reason::RateLimited.meaning().starts_with("The client"));
    }

    /// The serde name, the `as_str` name and the snake_case spelling of the variant agree,
    /// and the name reads back as the same variant.
    fn assert_wire_name<T>(value: T, name: &str, expected: &str)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        assert_eq!(name, expected);
        let json = serde_json::to_string(&value).expect("enums serialise");
        assert_eq!(json, format!("\"{expected}\""));
        let back: T = serde_json::from_str(&json).expect("own output parses");
        assert_eq!(back, value);
    }

    #[test]
    fn reason_wire_names_are_snake_case() {
        let names = [
            "invalid_payload",
            "invalid_field",
            "unsupported_media_type",
            "payload_too_large",
            "unauthorized",
            "source_key_mismatch",
            "source_disabled",
            "unknown_form",
            "rate_limited",
            "request_timeout",
            "client_closed",
            "duplicate",
            "downstream_timeout",
            "downstream_error",
            "internal_error",
            "overloaded",
            "state_unavailable",
        ];
        for (reason, name) in Reason::ALL.iter().copied().zip(names) {
            assert_wire_name(reason, reason.as_str(), name);
        }
    }

    #[test]
    fn outcome_wire_names_are_snake_case() {
        for (outcome, name) in Outcome::ALL
            .iter()
            .copied()
            .zip(["accepted", "rejected", "failed"])
        {
            assert_wire_name(outcome, outcome.as_str(), name);
        }
    }

    #[test]
    fn field_wire_names_are_snake_case() {
        let names = [
            "name",
            "email",
            "phone",
            "company",
            "source",
            "page",
            "consent",
            "utm",
            "submitted_at",
            "leads",
        ];
        for (field, name) in Field::ALL.iter().copied().zip(names) {
            assert_wire_name(field, field.as_str(), name);
        }
    }

    #[test]
    fn openapi_names_match_serde_names() {
        use poem_openapi::types::ToJSON;
        for &reason in Reason::ALL {
            assert_eq!(reason.to_json(), Some(serde_json::json!(reason.as_str())));
        }
        for &field in Field::ALL {
            assert_eq!(field.to_json(), Some(serde_json::json!(field.as_str())));
        }
        for &outcome in Outcome::ALL {
            assert_eq!(outcome.to_json(), Some(serde_json::json!(outcome.as_str())));
        }
    }
}
