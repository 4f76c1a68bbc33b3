//! The `clickhouse` crate, with its default features (lz4 compression, type validation),
//! against the local ClickHouse HTTP server.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::support::{Stack, TestDatabase};

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct Reading {
    id: u64,
    source: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::nanos")]
    at: DateTime<Utc>,
    attributes: HashMap<String, String>,
    values: Vec<f64>,
}

/// Creates `<db>.readings`; returns its full name.
async fn create_readings(db: &TestDatabase) -> String {
    let table = format!("{}.readings", db.name);
    let client = db.client();
    client
        .query(&format!("CREATE DATABASE IF NOT EXISTS {}", db.name))
        .execute()
        .await
        .unwrap();
    client
        .query(&format!(
            "CREATE TABLE {table} (id UInt64, source LowCardinality(String), at DateTime64(9, 'UTC'), \
             attributes Map(LowCardinality(String), String), values Array(Float64)) \
             ENGINE = MergeTree ORDER BY id"
        ))
        .execute()
        .await
        .unwrap();
    table
}

fn reading(id: u64) -> Reading {
    Reading {
        id,
        source: format!("source-{}", id % 3),
        at: DateTime::from_timestamp_nanos(1_764_000_000_123_456_789 + id as i64),
        attributes: HashMap::from([("k".to_owned(), format!("v{id}"))]),
        values: vec![id as f64, 0.5],
    }
}

#[tokio::test]
async fn create_insert_select_round_trips_with_compression_and_validation() {
    let db = TestDatabase::empty().await;
    let table = create_readings(&db).await;
    let client = db.bound_client();
    let rows: Vec<Reading> = (0..1000).map(reading).collect();
    let mut insert = client.insert::<Reading>("readings").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let back: Vec<Reading> = client
        .query(&format!("SELECT ?fields FROM {table} ORDER BY id"))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back, rows);

    let by_source: Vec<(String, u64)> = client
        .query(&format!(
            "SELECT source, count() FROM {table} WHERE id >= ? GROUP BY source ORDER BY source"
        ))
        .bind(10)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        by_source,
        vec![
            ("source-0".into(), 330),
            ("source-1".into(), 330),
            ("source-2".into(), 330)
        ]
    );
}

/// The error text of a query that must fail.
async fn failure_of(client: &clickhouse::Client, sql: &str) -> String {
    client
        .query(sql)
        .fetch_all::<u8>()
        .await
        .expect_err("the query fails")
        .to_string()
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_code_516() {
    let stack = Stack::require().await;
    let mut settings = stack.clickhouse.clone();
    settings.password = format!("{}-wrong", settings.password.expose()).into();
    let client = lead_lab::store::client(&settings);
    let text = failure_of(&client, "SELECT 1").await;
    assert!(
        text.contains("516") && text.contains("AUTHENTICATION_FAILED"),
        "{text}"
    );
}

#[tokio::test]
async fn a_sql_error_returns_clickhouse_text_and_code() {
    let stack = Stack::require().await;
    let text = failure_of(&stack.client(), "SELECT * FROM system.no_such_table_here").await;
    assert!(
        text.contains("Code: 60") && text.contains("UNKNOWN_TABLE"),
        "{text}"
    );

    let err = stack.client().query("SELEC 1").execute().await.unwrap_err();
    assert!(err.to_string().contains("Code: 62"), "{err}");
}

#[tokio::test]
async fn two_clients_inserting_concurrently_lose_no_rows() {
    let db = TestDatabase::empty().await;
    let table = create_readings(&db).await;
    let writers = (0..2u64).map(|writer| {
        let client = db.bound_client();
        tokio::spawn(async move {
            for batch in 0..10u64 {
                let mut insert = client.insert::<Reading>("readings").await.unwrap();
                for i in 0..500u64 {
                    insert
                        .write(&reading(writer * 1_000_000 + batch * 1000 + i))
                        .await
                        .unwrap();
                }
                insert.end().await.unwrap();
            }
        })
    });
    for writer in writers {
        writer.await.unwrap();
    }
    let (rows, distinct): (u64, u64) = db
        .client()
        .query(&format!("SELECT count(), uniqExact(id) FROM {table}"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((rows, distinct), (10_000, 10_000));
}
