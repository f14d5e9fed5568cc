"""The lab OMS's database schema, and the epoch fence every desk's OMS database needs.

The fence (fencing layer 4): ``dr_epoch`` holds the lowest epoch allowed to write. Every table
the OMS writes has an ``epoch`` column, and a trigger on it compares the writer's epoch with
``dr_epoch`` inside the writing transaction, so a write of an older epoch never commits:

- ``dr_epoch`` is read ``FOR SHARE``: a fence (``UPDATE dr_epoch``) waits for writers already
  past the check, and a writer arriving after the fence committed sees the new epoch. No write
  of an older epoch commits after ``dr_fence`` returns.
- INSERT and UPDATE are checked by the row's new ``epoch``; an UPDATE that does not set it keeps
  the old row's epoch, so it is refused once that epoch is fenced. DELETE and TRUNCATE carry no
  row epoch: they need ``SET LOCAL dr.writer_epoch = N`` in the same transaction.
- Refusals raise SQLSTATE ``DR001`` (stale epoch) or ``DR002`` (no epoch given).

What it does not do: it stops a stale *honest* writer (the old OMS still holding its old
epoch), not a hostile one, which could claim any epoch; and a superuser can drop the trigger.
A desk grants its OMS role the write functions and table DML, never ownership. Nor can a
database fence itself while it is down: see ``adapters/databases/postgres.py`` for the layers
that hold then.
"""

from __future__ import annotations

STALE_EPOCH_SQLSTATE = "DR001"
NO_EPOCH_SQLSTATE = "DR002"

OMS_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS dr_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch bigint NOT NULL CHECK (epoch >= 0),
    fenced_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO dr_epoch (epoch) VALUES (0) ON CONFLICT DO NOTHING;

-- Raise the lowest epoch allowed to write. Monotonic, so repeating a fence changes nothing.
CREATE OR REPLACE FUNCTION dr_fence(p_epoch bigint) RETURNS bigint
LANGUAGE sql AS $$
    UPDATE dr_epoch
       SET fenced_at = CASE WHEN p_epoch > epoch THEN now() ELSE fenced_at END,
           epoch = greatest(epoch, p_epoch)
    RETURNING epoch
$$;

CREATE OR REPLACE FUNCTION dr_check_writer_epoch(p_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    fenced bigint;
BEGIN
    IF p_epoch IS NULL THEN
        RAISE EXCEPTION 'write without an epoch: pass it, or SET LOCAL dr.writer_epoch'
            USING ERRCODE = 'DR002';
    END IF;
    -- FOR SHARE orders this write against dr_fence's UPDATE of the same row.
    SELECT epoch INTO fenced FROM dr_epoch FOR SHARE;
    IF p_epoch < fenced THEN
        RAISE EXCEPTION 'stale epoch %: this database is fenced at epoch %', p_epoch, fenced
            USING ERRCODE = 'DR001',
                  HINT = 'a newer region holds the lease; this writer must stop';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION dr_fence_row_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM dr_check_writer_epoch(
            nullif(current_setting('dr.writer_epoch', true), '')::bigint);
        RETURN OLD;
    END IF;
    PERFORM dr_check_writer_epoch(NEW.epoch);
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION dr_fence_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dr_check_writer_epoch(nullif(current_setting('dr.writer_epoch', true), '')::bigint);
    RETURN NULL;
END $$;

CREATE TABLE IF NOT EXISTS risk_parameters (
    symbol text PRIMARY KEY,
    max_position numeric NOT NULL CHECK (max_position >= 0),
    max_order_qty numeric CHECK (max_order_qty > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    epoch bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS pending_orders (
    client_order_id text PRIMARY KEY,
    symbol text NOT NULL,
    side text NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity numeric NOT NULL CHECK (quantity > 0),
    limit_price numeric CHECK (limit_price > 0),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'filled', 'cancelled')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    epoch bigint NOT NULL
);

CREATE OR REPLACE TRIGGER risk_parameters_epoch_fence
    BEFORE INSERT OR UPDATE OR DELETE ON risk_parameters
    FOR EACH ROW EXECUTE FUNCTION dr_fence_row_write();
CREATE OR REPLACE TRIGGER risk_parameters_epoch_fence_truncate
    BEFORE TRUNCATE ON risk_parameters
    FOR EACH STATEMENT EXECUTE FUNCTION dr_fence_truncate();
CREATE OR REPLACE TRIGGER pending_orders_epoch_fence
    BEFORE INSERT OR UPDATE OR DELETE ON pending_orders
    FOR EACH ROW EXECUTE FUNCTION dr_fence_row_write();
CREATE OR REPLACE TRIGGER pending_orders_epoch_fence_truncate
    BEFORE TRUNCATE ON pending_orders
    FOR EACH STATEMENT EXECUTE FUNCTION dr_fence_truncate();

-- The OMS's write path. The triggers do the epoch check; these only say what a write is.
CREATE OR REPLACE FUNCTION oms_write_risk_limit(
    p_epoch bigint, p_symbol text, p_max_position numeric, p_max_order_qty numeric DEFAULT NULL
) RETURNS SETOF risk_parameters
LANGUAGE sql AS $$
    INSERT INTO risk_parameters AS r (symbol, max_position, max_order_qty, epoch, updated_at)
    VALUES (p_symbol, p_max_position, p_max_order_qty, p_epoch, now())
    ON CONFLICT (symbol) DO UPDATE
       SET max_position = excluded.max_position,
           max_order_qty = coalesce(excluded.max_order_qty, r.max_order_qty),
           epoch = excluded.epoch,
           updated_at = excluded.updated_at
    RETURNING *
$$;

CREATE OR REPLACE FUNCTION oms_write_pending_order(
    p_epoch bigint, p_client_order_id text, p_symbol text, p_side text, p_quantity numeric,
    p_limit_price numeric
) RETURNS SETOF pending_orders
LANGUAGE sql AS $$
    INSERT INTO pending_orders AS o
        (client_order_id, symbol, side, quantity, limit_price, status, epoch, updated_at)
    VALUES (p_client_order_id, p_symbol, p_side, p_quantity, p_limit_price, 'pending', p_epoch,
            now())
    ON CONFLICT (client_order_id) DO UPDATE
       SET quantity = excluded.quantity,
           limit_price = excluded.limit_price,
           epoch = excluded.epoch,
           updated_at = excluded.updated_at
    RETURNING *
$$;

CREATE OR REPLACE FUNCTION oms_close_pending_order(
    p_epoch bigint, p_client_order_id text, p_status text
) RETURNS SETOF pending_orders
LANGUAGE sql AS $$
    UPDATE pending_orders
       SET status = p_status, epoch = p_epoch, updated_at = now()
     WHERE client_order_id = p_client_order_id
    RETURNING *
$$;
"""
