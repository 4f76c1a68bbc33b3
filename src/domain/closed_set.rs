//! One declaration per closed set: [`closed_set!`] wraps an enum with everything a
//! closed vocabulary needs, so the variant list, the wire spelling and `Display` cannot
//! drift from the enum, and a new variant needs nothing but its line (and the `match`es
//! the compiler then points at).

/// Declares a closed set: the enum (its docs and any extra derives, e.g.
/// `poem_openapi::Enum`, come first) with serde and strum derives in snake_case, `ALL`
/// (every value, in declaration order), `as_str` (the wire and telemetry name, as serde
/// and the OpenAPI spec write it) and `Display`.
#[macro_export]
macro_rules! closed_set {
    ($(#[$meta:meta])* $vis:vis enum $set:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            serde::Serialize,
            serde::Deserialize,
            strum::IntoStaticStr,
            strum::VariantArray,
            strum::EnumMessage,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        $vis enum $set { $($body)* }

        impl $set {
            /// Every value, in declaration order.
            pub const ALL: &'static [$set] = <$set as strum::VariantArray>::VARIANTS;

            /// The wire and telemetry name: the variant in snake_case.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        impl ::std::fmt::Display for $set {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
