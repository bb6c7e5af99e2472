-- openpacs index, version 6: temporary lock-out of an account after repeated wrong passwords.
-- Kept with the account (not in one server's memory) so that it survives a restart and holds
-- for every node; an administrator lifts it early (REST API or `openpacs user unlock`).
ALTER TABLE user_account ADD COLUMN locked_until TEXT;
