-- Every UPDATE bumps `version`, whoever the writer is: the API, a seed script or
-- an operator at a SQL prompt. The read model's monotonic guard and the API's
-- optimistic concurrency both rely on versions that never stand still or go
-- back, so the database enforces it rather than each writer.

CREATE TRIGGER tr_packages_version BEFORE UPDATE ON packages
  FOR EACH ROW SET NEW.version = OLD.version + 1;

CREATE TRIGGER tr_purchases_version BEFORE UPDATE ON purchases
  FOR EACH ROW SET NEW.version = OLD.version + 1;

CREATE TRIGGER tr_payments_version BEFORE UPDATE ON payments
  FOR EACH ROW SET NEW.version = OLD.version + 1;
