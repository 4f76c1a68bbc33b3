-- Which process recorded an attempt, and whether it was replayed history. `instance`
-- (the `service.instance.id` resource attribute, new at every start) lets the analyzer
-- reconcile what each process counted in its `leads.submissions` counter with the rows
-- its spans became; `replayed` marks attempts at a stated (simulated) time, whose rows
-- land on their simulated day while their count lands on the day they were sent.
ALTER TABLE ${DATABASE}.lead_submissions ${ON_CLUSTER}
    ADD COLUMN IF NOT EXISTS instance LowCardinality(String) AFTER service;

ALTER TABLE ${DATABASE}.lead_submissions ${ON_CLUSTER}
    ADD COLUMN IF NOT EXISTS replayed UInt8 AFTER duration_ns;

ALTER TABLE ${DATABASE}.lead_submissions_mv ${ON_CLUSTER} MODIFY QUERY
SELECT
    Timestamp                                                  AS event_time,
    TraceId                                                    AS trace_id,
    SpanId                                                     AS span_id,
    ServiceName                                                AS service,
    ResourceAttributes['service.instance.id']                  AS instance,
    SpanAttributes['lead.source']                              AS source,
    SpanAttributes['lead.endpoint']                            AS endpoint,
    SpanAttributes['lead.page']                                AS page,
    SpanAttributes['lead.form_id']                             AS form_id,
    SpanAttributes['lead.outcome']                             AS outcome,
    SpanAttributes['lead.reason']                              AS reason,
    SpanAttributes['lead.field']                               AS field,
    SpanAttributes['lead.submitter_hash']                      AS submitter_hash,
    SpanAttributes['lead.client_id']                           AS client_id,
    SpanAttributes['lead.id']                                  AS lead_id,
    toUInt16OrZero(SpanAttributes['http.response.status_code']) AS http_status,
    toUInt8OrZero(SpanAttributes['lead.delivery.attempts'])    AS delivery_attempts,
    Duration                                                   AS duration_ns,
    toUInt8(SpanAttributes['lead.replayed'] = 'true')          AS replayed
FROM ${DATABASE}.otel_traces
WHERE SpanName = 'lead.submit';
