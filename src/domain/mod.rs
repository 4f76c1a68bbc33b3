//! The lead domain: what a submission is, and the closed vocabularies used to describe
//! how an attempt ended.
//!
//! - **Parse, don't validate.** Request bodies become [`LeadInput`] through
//!   [`lead_from_json`], [`batch_from_json`] or [`lead_from_form`]; each value is a newtype
//!   that can only be built by its `parse`, so code holding one never re-checks it and
//!   cannot forget to. Failures become a [`Rejection`] that already carries the source and
//!   page, for telemetry.
//! - **Closed sets for telemetry.** [`Outcome`], [`Reason`] and [`Field`] are the only
//!   values of `lead.outcome`, `lead.reason` and `lead.field`, and fix the HTTP status of
//!   each reason, so dashboards and the API cannot drift apart.
//! - **PII is never printed.** `Debug` of [`Name`], [`Email`], [`Phone`] and [`Company`]
//!   is redacted and they have no `Display`; rejection messages never echo submitted
//!   values; an email leaves the process only as a keyed [`SubmitterHash`].

pub mod closed_set;
pub mod fields;
pub mod lead;
pub mod outcome;
pub mod submitter;

pub use fields::{Company, Email, FieldError, Name, PagePath, Phone, SourceName, Utm, UtmValue};
pub use lead::{LeadInput, Rejection, batch_from_json, lead_from_form, lead_from_json};
pub use outcome::{ACCEPTED_STATUS, Field, Outcome, Reason};
pub use submitter::{SubmitterHash, SubmitterHasher};
