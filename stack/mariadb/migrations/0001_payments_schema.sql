-- The payments schema: users buy packages from a catalogue; a purchase is paid
-- by one or more payment attempts. Reads are "one purchase by id" and "all
-- purchases of one user, newest first", so purchases carry an index on
-- (user_id, created_at DESC, id DESC). Every mutable row has a `version` that
-- starts at 1 and is incremented by each UPDATE: it drives optimistic
-- concurrency in the API and the monotonic guard of the Redis read model.

CREATE TABLE users (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  email         VARCHAR(255)    NOT NULL,
  display_name  VARCHAR(255)    NOT NULL,
  created_at    DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at    DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (id),
  UNIQUE KEY uq_users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE packages (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  code         VARCHAR(64)     NOT NULL,
  name         VARCHAR(255)    NOT NULL,
  description  TEXT            NULL,
  price        DECIMAL(12,2)   NOT NULL,
  currency     CHAR(3)         NOT NULL,
  active       BOOLEAN         NOT NULL DEFAULT TRUE,
  attributes   JSON            NULL CHECK (attributes IS NULL OR JSON_VALID(attributes)),
  version      BIGINT UNSIGNED NOT NULL DEFAULT 1,
  created_at   DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at   DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (id),
  UNIQUE KEY uq_packages_code (code),
  CONSTRAINT ck_packages_price CHECK (price >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE purchases (
  id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id          BIGINT UNSIGNED NOT NULL,
  package_id       BIGINT UNSIGNED NOT NULL,
  quantity         INT UNSIGNED    NOT NULL,
  amount           DECIMAL(14,2)   NOT NULL,
  currency         CHAR(3)         NOT NULL,
  status           ENUM('pending','paid','cancelled','refunded') NOT NULL DEFAULT 'pending',
  idempotency_key  VARCHAR(128)    NOT NULL,
  created_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  version          BIGINT UNSIGNED NOT NULL DEFAULT 1,
  PRIMARY KEY (id),
  UNIQUE KEY uq_purchases_user_idem (user_id, idempotency_key),
  KEY ix_purchases_user_newest (user_id, created_at DESC, id DESC),
  KEY ix_purchases_package (package_id),
  CONSTRAINT fk_purchases_user    FOREIGN KEY (user_id)    REFERENCES users (id),
  CONSTRAINT fk_purchases_package FOREIGN KEY (package_id) REFERENCES packages (id),
  CONSTRAINT ck_purchases_quantity CHECK (quantity > 0),
  CONSTRAINT ck_purchases_amount   CHECK (amount >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE payments (
  id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  purchase_id      BIGINT UNSIGNED NOT NULL,
  amount           DECIMAL(14,2)   NOT NULL,
  currency         CHAR(3)         NOT NULL,
  method           ENUM('card','wallet','bank_transfer') NOT NULL,
  status           ENUM('pending','succeeded','failed','refunded') NOT NULL DEFAULT 'pending',
  provider_ref     VARCHAR(128)    NULL,
  idempotency_key  VARCHAR(128)    NOT NULL,
  created_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at       DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  version          BIGINT UNSIGNED NOT NULL DEFAULT 1,
  PRIMARY KEY (id),
  UNIQUE KEY uq_payments_idem (idempotency_key),
  KEY ix_payments_purchase (purchase_id, created_at),
  CONSTRAINT fk_payments_purchase FOREIGN KEY (purchase_id) REFERENCES purchases (id),
  CONSTRAINT ck_payments_amount CHECK (amount >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
