-- An example warehouse for Dean to inspect: a small online shop with customers, products,
-- orders, order lines, payments and a clickstream, generated with recursive CTEs.
--
-- This is the SQLite variant; warehouse.postgres.sql is the same data for PostgreSQL (only the
-- date arithmetic differs). Build it with:
--
--     sqlite3 warehouse.db < examples/warehouse.sql
--
-- and point Dean's database tool at `sqlite:warehouse.db`. Some indexes are missing on
-- purpose (orders.customer_id, orders.status, order_items.order_id,
-- product_events.customer_id), so that Dean has slow queries to find. The customer columns
-- hold made-up personal data (e-mail, phone, date of birth, address) for the PII report.

CREATE TABLE customers (
    customer_id      INTEGER PRIMARY KEY,
    first_name       TEXT NOT NULL,
    last_name        TEXT NOT NULL,
    email            TEXT NOT NULL UNIQUE,
    phone            TEXT,
    dob              DATE,
    street_address   TEXT,
    city             TEXT,
    postal_code      TEXT,
    country          TEXT NOT NULL,
    marketing_opt_in BOOLEAN NOT NULL,
    created_at       TIMESTAMP NOT NULL
);

CREATE TABLE products (
    product_id  INTEGER PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    category    TEXT NOT NULL,
    price_cents INTEGER NOT NULL
);

-- No index on customer_id or status, on purpose: "orders of a customer" and "orders by
-- status" read the whole table.
CREATE TABLE orders (
    order_id         INTEGER PRIMARY KEY,
    customer_id      INTEGER NOT NULL REFERENCES customers (customer_id),
    status           TEXT NOT NULL,
    ordered_at       TIMESTAMP NOT NULL,
    shipping_address TEXT,
    total_cents      INTEGER NOT NULL
);

-- product_id is indexed; order_id, the join column every order report needs, is not.
CREATE TABLE order_items (
    order_item_id    INTEGER PRIMARY KEY,
    order_id         INTEGER NOT NULL REFERENCES orders (order_id),
    product_id       INTEGER NOT NULL REFERENCES products (product_id),
    quantity         INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL
);
CREATE INDEX idx_order_items_product_id ON order_items (product_id);

CREATE TABLE payments (
    payment_id   INTEGER PRIMARY KEY,
    order_id     INTEGER NOT NULL REFERENCES orders (order_id),
    method       TEXT NOT NULL,
    card_brand   TEXT,
    card_last4   TEXT,
    amount_cents INTEGER NOT NULL,
    paid_at      TIMESTAMP NOT NULL
);
CREATE INDEX idx_payments_order_id ON payments (order_id);

-- Clickstream. occurred_at is indexed for time-window queries; customer_id is not.
CREATE TABLE product_events (
    event_id    INTEGER PRIMARY KEY,
    customer_id INTEGER REFERENCES customers (customer_id),
    product_id  INTEGER NOT NULL REFERENCES products (product_id),
    event_type  TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    session_id  TEXT NOT NULL,
    ip_address  TEXT,
    user_agent  TEXT
);
CREATE INDEX idx_product_events_occurred_at ON product_events (occurred_at);

-- 2,000 customers. Names, addresses and phone numbers are made up; e-mail addresses use
-- the reserved example.com domain.
INSERT INTO customers (customer_id, first_name, last_name, email, phone, dob, street_address,
                       city, postal_code, country, marketing_opt_in, created_at)
WITH RECURSIVE n(i) AS (
    SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000
),
people AS (
    SELECT i,
           CASE i % 16
               WHEN 0 THEN 'Maria' WHEN 1 THEN 'James' WHEN 2 THEN 'Aisha' WHEN 3 THEN 'Wei'
               WHEN 4 THEN 'Lucas' WHEN 5 THEN 'Priya' WHEN 6 THEN 'Tomasz' WHEN 7 THEN 'Emma'
               WHEN 8 THEN 'Kenji' WHEN 9 THEN 'Sofia' WHEN 10 THEN 'Omar' WHEN 11 THEN 'Chloe'
               WHEN 12 THEN 'Diego' WHEN 13 THEN 'Hannah' WHEN 14 THEN 'Ravi' ELSE 'Grace'
           END AS first_name,
           CASE (i * 7) % 13
               WHEN 0 THEN 'Garcia' WHEN 1 THEN 'Smith' WHEN 2 THEN 'Okafor' WHEN 3 THEN 'Chen'
               WHEN 4 THEN 'Muller' WHEN 5 THEN 'Patel' WHEN 6 THEN 'Kowalski' WHEN 7 THEN 'Brown'
               WHEN 8 THEN 'Tanaka' WHEN 9 THEN 'Rossi' WHEN 10 THEN 'Haddad' WHEN 11 THEN 'Martin'
               ELSE 'Lopez'
           END AS last_name
    FROM n
)
SELECT i,
       first_name,
       last_name,
       lower(first_name) || '.' || lower(last_name) || i || '@example.com',
       '+1-555-' || (1000 + (i * 37) % 9000),
       date('1950-01-01', '+' || ((i * 7919) % 20000) || ' days'),
       (10 + (i * 13) % 990) || ' ' || CASE i % 6
           WHEN 0 THEN 'Oak Street' WHEN 1 THEN 'Maple Avenue' WHEN 2 THEN 'High Street'
           WHEN 3 THEN 'Harbour Road' WHEN 4 THEN 'Linden Way' ELSE 'Station Road'
       END,
       CASE i % 8
           WHEN 0 THEN 'Springfield' WHEN 1 THEN 'Portland' WHEN 2 THEN 'Austin' WHEN 3 THEN 'Leeds'
           WHEN 4 THEN 'Bristol' WHEN 5 THEN 'Hamburg' WHEN 6 THEN 'Lyon' ELSE 'Denver'
       END,
       '' || (10000 + (i * 97) % 89999),
       CASE i % 8
           WHEN 3 THEN 'GB' WHEN 4 THEN 'GB' WHEN 5 THEN 'DE' WHEN 6 THEN 'FR' ELSE 'US'
       END,
       i % 3 = 0,
       datetime('2023-01-01 00:00:00', '+' || ((i * 3607) % 31536000) || ' seconds')
FROM people;

-- 200 products in five categories.
INSERT INTO products (product_id, sku, name, category, price_cents)
WITH RECURSIVE n(i) AS (
    SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200
)
SELECT i,
       'SKU-' || (10000 + i),
       CASE i % 5
           WHEN 0 THEN 'Trail Runner ' WHEN 1 THEN 'Merino Tee ' WHEN 2 THEN 'Daypack '
           WHEN 3 THEN 'Camp Stove ' ELSE 'Headlamp '
       END || i,
       CASE i % 5
           WHEN 0 THEN 'shoes' WHEN 1 THEN 'apparel' WHEN 2 THEN 'bags'
           WHEN 3 THEN 'outdoor' ELSE 'electronics'
       END,
       999 + (i * 731) % 20000
FROM n;

-- 12,000 orders over 2024, shipped to the customer's address.
INSERT INTO orders (order_id, customer_id, status, ordered_at, shipping_address, total_cents)
WITH RECURSIVE n(i) AS (
    SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000
)
SELECT n.i,
       c.customer_id,
       CASE n.i % 20
           WHEN 0 THEN 'cancelled' WHEN 1 THEN 'refunded' WHEN 2 THEN 'pending'
           WHEN 3 THEN 'pending' ELSE 'shipped'
       END,
       datetime('2024-01-01 00:00:00', '+' || ((n.i * 2621) % 31536000) || ' seconds'),
       c.street_address || ', ' || c.city || ' ' || c.postal_code,
       0
FROM n
JOIN customers c ON c.customer_id = 1 + (n.i * 7) % 2000;

-- One to four lines per order: about 30,000 order lines.
INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price_cents)
WITH RECURSIVE lines(order_id, line) AS (
    SELECT order_id, 1 FROM orders
    UNION ALL
    SELECT order_id, line + 1 FROM lines WHERE line < 1 + order_id % 4
)
SELECT l.order_id * 10 + l.line,
       l.order_id,
       p.product_id,
       1 + (l.order_id + l.line) % 3,
       p.price_cents
FROM lines l
JOIN products p ON p.product_id = 1 + (l.order_id * 31 + l.line * 17) % 200;

UPDATE orders
SET total_cents = t.total
FROM (SELECT order_id, SUM(quantity * unit_price_cents) AS total
      FROM order_items GROUP BY order_id) AS t
WHERE orders.order_id = t.order_id;

-- A payment for every shipped or refunded order. Only the card's brand and last four
-- digits are kept, as PCI DSS allows.
INSERT INTO payments (payment_id, order_id, method, card_brand, card_last4, amount_cents, paid_at)
SELECT order_id,
       order_id,
       CASE order_id % 5 WHEN 0 THEN 'paypal' ELSE 'card' END,
       CASE WHEN order_id % 5 = 0 THEN NULL
            WHEN order_id % 3 = 0 THEN 'visa' WHEN order_id % 3 = 1 THEN 'mastercard' ELSE 'amex' END,
       CASE WHEN order_id % 5 = 0 THEN NULL ELSE '' || (1000 + (order_id * 53) % 9000) END,
       total_cents,
       datetime(ordered_at, '+1 hour')
FROM orders
WHERE status IN ('shipped', 'refunded');

-- 50,000 clickstream events; one in five is from a visitor who is not signed in.
INSERT INTO product_events (event_id, customer_id, product_id, event_type, occurred_at,
                            session_id, ip_address, user_agent)
WITH RECURSIVE n(i) AS (
    SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000
)
SELECT i,
       CASE WHEN i % 5 = 0 THEN NULL ELSE 1 + (i / 7) % 2000 END,
       1 + (i * 17) % 200,
       CASE i % 10
           WHEN 6 THEN 'add_to_cart' WHEN 7 THEN 'add_to_cart' WHEN 8 THEN 'checkout'
           WHEN 9 THEN 'purchase' ELSE 'view'
       END,
       datetime('2024-01-01 00:00:00', '+' || ((i * 631) % 31536000) || ' seconds'),
       's-' || (i / 7),
       '203.0.113.' || (1 + (i / 7) % 254),
       CASE (i / 7) % 3
           WHEN 0 THEN 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) Safari/605.1.15'
           WHEN 1 THEN 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0'
           ELSE 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148'
       END
FROM n;

-- Planner statistics, so that row estimates are right from the start.
ANALYZE;
