//! Lead domain types (being written).
