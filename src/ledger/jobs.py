"""Job leases: one row per periodic job, so one of several proxy replicas runs it.

A lease is taken by one upsert that succeeds only when the row is new or its lease
has run out; it is given back when the job ends (or kept to its expiry, so the job
runs at most once per lease across the fleet). Replicas' clocks are assumed to
agree to well within a lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from .tables import JobLeaseRow
from .upsert import insert


def acquire(session: Session, name: str, holder: str, *, lease_seconds: float, now: datetime) -> bool:
    expires_at = now + timedelta(seconds=lease_seconds)
    stmt = (
        insert(session, JobLeaseRow)
        .values(name=name, holder=holder, expires_at=expires_at, acquired_at=now)
        .on_conflict_do_update(
            index_elements=[JobLeaseRow.name],
            set_={"holder": holder, "expires_at": expires_at, "acquired_at": now},
            where=JobLeaseRow.expires_at <= now,
        )
        .returning(JobLeaseRow.holder)
    )
    return session.execute(stmt).scalar_one_or_none() == holder


def release(session: Session, name: str, holder: str, *, now: datetime) -> None:
    # Only our own lease: if it ran out and another replica took the job, theirs stays.
    session.execute(
        update(JobLeaseRow)
        .where(JobLeaseRow.name == name, JobLeaseRow.holder == holder)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
