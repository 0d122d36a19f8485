-- The W3C trace context of the request that wrote each outbox row, so the relay can pass
-- it on as a bus header and one trace id follows a message across every hop.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
