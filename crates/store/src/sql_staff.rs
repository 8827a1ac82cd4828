//! [`StaffStore`] over either pool.

use crate::dialect::Dialect;
use crate::records::*;
use crate::sql::{Db, SqlStore};
use crate::{Result, StaffStore, StoreError};
use async_trait::async_trait;
use sqlx::Row;

#[async_trait]
impl StaffStore for SqlStore {
    async fn center(&self, id: i64) -> Result<Option<CenterRecord>> {
        on_db!(self, |p| {
            let row = sqlx::query(
                "SELECT id, name, address, postal_code, time_zone, quiet_hours FROM centers WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            row.map(|r| {
                Ok(CenterRecord {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    address: r.try_get(2)?,
                    postal_code: r.try_get(3)?,
                    time_zone: r.try_get(4)?,
                    quiet_hours: r.try_get(5)?,
                })
            })
            .transpose()
        })
    }

    async fn create_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        user_id: i64,
        csrf: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            sqlx::query("INSERT INTO tokens (hash, purpose, subject_id, created_at, expires_at, csrf) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(hash)
                .bind(purpose.as_str())
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .bind(csrf)
                .execute(&mut *tx)
                .await?;
            let actor = format!("user:{user_id}");
            audit!(
                tx,
                now,
                actor.as_str(),
                "user.signed_in",
                "user",
                user_id,
                format!("{{\"via\":\"{}\"}}", purpose.as_str())
            );
            tx.commit().await?;
            Ok(())
        })
    }

    async fn staff_by_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: i64,
    ) -> Result<Option<StaffSession>> {
        on_db!(self, |p| {
            let row = sqlx::query(
                "SELECT u.id, u.email, u.role, u.center_id, t.csrf FROM tokens t JOIN staff_users u ON u.id = t.subject_id \
                 WHERE t.hash = $1 AND t.purpose = $2 AND t.expires_at > $3",
            )
            .bind(hash)
            .bind(purpose.as_str())
            .bind(now)
            .fetch_optional(p)
            .await?;
            row.map(|r| {
                Ok(StaffSession {
                    user_id: r.try_get(0)?,
                    email: r.try_get(1)?,
                    role: r.try_get(2)?,
                    center_id: r.try_get(3)?,
                    csrf: r.try_get(4)?,
                })
            })
            .transpose()
        })
    }

    async fn delete_token(&self, hash: &str) -> Result<()> {
        on_db!(self, |p| {
            let _slot = p.write_slot().await;
            sqlx::query("DELETE FROM tokens WHERE hash = $1")
                .bind(hash)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    async fn throttle_hit(&self, key: &str, window_ms: i64, limit: i64, now: i64) -> Result<bool> {
        let window_start = now - now.rem_euclid(window_ms.max(1));
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let hits: i64 = sqlx::query_scalar(
                "INSERT INTO throttle (key, window_start, hits) VALUES ($1, $2, 1) \
                 ON CONFLICT (key) DO UPDATE SET hits = CASE WHEN throttle.window_start = excluded.window_start THEN throttle.hits + 1 ELSE 1 END, \
                 window_start = excluded.window_start RETURNING hits",
            )
            .bind(key)
            .bind(window_start)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(hits <= limit)
        })
    }

    async fn failures(&self, key: &str) -> Result<Option<(i64, i64)>> {
        on_db!(self, |p| {
            let row = sqlx::query("SELECT hits, window_start FROM throttle WHERE key = $1")
                .bind(key)
                .fetch_optional(p)
                .await?;
            row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
        })
    }

    async fn add_failure(&self, key: &str, forget_after_ms: i64, now: i64) -> Result<i64> {
        // `window_start` holds when the last failure was.
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let hits: i64 = sqlx::query_scalar(
                "INSERT INTO throttle (key, window_start, hits) VALUES ($1, $2, 1) \
                 ON CONFLICT (key) DO UPDATE SET hits = CASE WHEN throttle.window_start >= $3 THEN throttle.hits + 1 ELSE 1 END, \
                 window_start = excluded.window_start RETURNING hits",
            )
            .bind(key)
            .bind(now)
            .bind(now - forget_after_ms)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(hits)
        })
    }

    async fn clear_failures(&self, key: &str) -> Result<()> {
        on_db!(self, |p| {
            let _slot = p.write_slot().await;
            sqlx::query("DELETE FROM throttle WHERE key = $1")
                .bind(key)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    async fn adjust_stock(
        &self,
        center_id: i64,
        vaccine: &str,
        kind: &str,
        doses: i64,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        if doses <= 0 {
            return Err(StoreError::Conflict("doses_not_positive"));
        }
        on_db!(self, |p| {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query("UPDATE stock SET on_hand = on_hand - $3 WHERE center_id = $1 AND vaccine = $2 AND on_hand - reserved >= $3")
                .bind(center_id)
                .bind(vaccine)
                .bind(doses)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::Conflict("insufficient_stock"));
            }
            sqlx::query("INSERT INTO stock_ledger (center_id, vaccine, kind, doses, actor, at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(center_id)
                .bind(vaccine)
                .bind(kind)
                .bind(-doses)
                .bind(actor)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let detail = format!("{{\"vaccine\":{vaccine:?},\"doses\":{doses}}}");
            audit!(
                tx,
                now,
                actor,
                format!("stock.{kind}"),
                "center",
                center_id,
                detail
            );
            tx.commit().await?;
            Ok(())
        })
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>> {
        on_db!(self, |p| {
            let rows =
                sqlx::query("SELECT id, email, role, center_id FROM staff_users ORDER BY email")
                    .fetch_all(p)
                    .await?;
            rows.iter()
                .map(|r| {
                    Ok(UserSummary {
                        id: r.try_get(0)?,
                        email: r.try_get(1)?,
                        role: r.try_get(2)?,
                        center_id: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }
}
