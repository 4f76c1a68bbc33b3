// The official JS client (@clickhouse/client) against the dev ClickHouse server.
// Run by tests/test_compat.py with CH_URL and CH_PASSWORD; exits non-zero on any failure.
'use strict'
const assert = require('node:assert/strict')
const { createClient, ClickHouseLogLevel } = require('@clickhouse/client')

const url = process.env.CH_URL
const password = process.env.CH_PASSWORD
assert.ok(url, 'CH_URL is not set')

async function expectError(promise, code, type) {
  try {
    await promise
  } catch (err) {
    assert.equal(err.code, code, `error code of ${err.message}`)
    assert.equal(err.type, type)
    return err
  }
  assert.fail(`expected ClickHouse error ${code} ${type}`)
}

async function run(label, options) {
  const client = createClient({ url, username: 'default', password, log: { level: ClickHouseLogLevel.OFF }, ...options })
  const table = `js_${label}_${process.pid}_${Date.now()}`
  try {
    assert.equal((await client.ping()).success, true)
    await client.command({
      query: `CREATE TABLE ${table} (id UInt32, name String, ts DateTime64(3)) ENGINE = MergeTree ORDER BY id`,
    })
    const values = [
      { id: 1, name: 'one', ts: '2026-01-02 03:04:05.678' },
      { id: 2, name: 'two', ts: '2026-01-02 03:04:06.000' },
    ]
    const inserted = await client.insert({ table, values, format: 'JSONEachRow' })
    assert.equal(inserted.executed, true)
    assert.equal(inserted.summary.written_rows, '2')

    const result = await client.query({ query: `SELECT id, name, ts FROM ${table} ORDER BY id`, format: 'JSONEachRow' })
    assert.equal(result.response_headers['x-clickhouse-format'], 'JSONEachRow')
    assert.deepEqual(await result.json(), values)

    const json = await client.query({ query: `SELECT count() AS n FROM ${table}`, format: 'JSON' })
    const doc = await json.json()
    assert.deepEqual(doc.data, [{ n: 2 }])
    assert.deepEqual(doc.meta, [{ name: 'n', type: 'UInt64' }])

    const params = await client.query({
      query: 'SELECT {n:UInt32} * 2 AS x, {s:String} AS s',
      query_params: { n: 21, s: "it's" },
      format: 'JSONEachRow',
    })
    assert.deepEqual(await params.json(), [{ x: 42, s: "it's" }])

    const stream = (await client.query({ query: 'SELECT number FROM numbers(100000)', format: 'JSONEachRow' })).stream()
    let count = 0
    let sum = 0
    for await (const rows of stream) {
      for (const row of rows) {
        count += 1
        sum += Number(row.json().number)
      }
    }
    assert.equal(count, 100000)
    assert.equal(sum, 4999950000)

    const withSettings = await client.query({
      query: "SELECT getSetting('max_threads') AS t",
      clickhouse_settings: { max_threads: 1 },
      format: 'JSONEachRow',
    })
    assert.deepEqual(await withSettings.json(), [{ t: 1 }])

    await expectError(client.query({ query: "SELECT * FROM file('/etc/passwd', 'LineAsString')" }), '497', 'ACCESS_DENIED')
    await expectError(client.query({ query: 'SELECT * FROM no_such_table_js' }), '60', 'UNKNOWN_TABLE')
    await client.command({ query: `DROP TABLE ${table}` })
  } finally {
    await client.close()
  }
  const wrong = createClient({ url, username: 'default', password: `${password}-wrong`, log: { level: ClickHouseLogLevel.OFF }, ...options })
  try {
    await expectError(wrong.query({ query: 'SELECT 1' }), '516', 'AUTHENTICATION_FAILED')
  } finally {
    await wrong.close()
  }
  console.log(`js client ${label}: ok`)
}

async function main() {
  await run('defaults', {})
  await run('compressed', { compression: { request: true, response: true } })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
