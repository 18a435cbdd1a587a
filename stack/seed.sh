#!/usr/bin/env bash
# Seeds demo data into the local MariaDB: a package catalogue, users, and
# purchases with payments. Idempotent: it only seeds an empty database.
# SEED_USERS (default 10000) sets how many users; each gets 1-5 purchases.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CNF="$STACK_VAR/mariadb/my.cnf"
USERS="${SEED_USERS:-10000}"
sql() { mariadb --defaults-file="$CNF" -uroot --protocol=socket payments "$@"; }

existing=$(sql -N -e 'SELECT COUNT(*) FROM users')
if [[ "$existing" != "0" ]]; then
  log "demo data already present ($existing users); not seeding again"
  exit 0
fi
log "seeding $USERS users with purchases"
sql <<SQL
INSERT INTO packages (code, name, description, price, currency, attributes)
SELECT CONCAT('pkg-', seq),
       CONCAT(ELT(1 + seq % 4, 'Starter', 'Plus', 'Pro', 'Ultimate'), ' pack ', seq),
       CONCAT('Demo package number ', seq),
       ROUND(0.99 + seq * 2.5, 2),
       'EUR',
       JSON_OBJECT('credits', seq * 100, 'tier', ELT(1 + seq % 4, 'bronze', 'silver', 'gold', 'platinum'))
FROM seq_1_to_20;

INSERT INTO users (email, display_name)
SELECT CONCAT('user', seq, '@example.com'), CONCAT('Demo User ', seq)
FROM seq_1_to_${USERS};

-- 1 to 5 purchases per user, spread over the last 90 days.
INSERT INTO purchases (user_id, package_id, quantity, amount, currency, status, idempotency_key, created_at)
SELECT u.id,
       p.id,
       1 + (u.id + n.seq) % 3,
       p.price * (1 + (u.id + n.seq) % 3),
       p.currency,
       ELT(1 + (u.id * 7 + n.seq) % 4, 'pending', 'paid', 'paid', 'cancelled'),
       CONCAT('seed-', u.id, '-', n.seq),
       NOW(6) - INTERVAL ((u.id * 13 + n.seq * 7919) % (90 * 24 * 3600)) SECOND
FROM users u
JOIN seq_1_to_5 n ON n.seq <= 1 + u.id % 5
JOIN packages p ON p.id = 1 + (u.id + n.seq) % 20;

INSERT INTO payments (purchase_id, amount, currency, method, status, provider_ref, idempotency_key, created_at)
SELECT id, amount, currency, ELT(1 + id % 3, 'card', 'wallet', 'bank_transfer'), 'succeeded',
       CONCAT('psp_', LPAD(HEX(id), 12, '0')), CONCAT('seed-pay-', id), created_at + INTERVAL 30 SECOND
FROM purchases WHERE status = 'paid';
SQL
log "seeded: $(sql -N -e 'SELECT CONCAT((SELECT COUNT(*) FROM users), " users, ", (SELECT COUNT(*) FROM purchases), " purchases, ", (SELECT COUNT(*) FROM payments), " payments")')"
