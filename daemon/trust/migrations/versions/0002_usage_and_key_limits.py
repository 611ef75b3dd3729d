"""Usage accounting (one row per inference request) and per-key limits on tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2027-01-10
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hour_s", sa.BigInteger, nullable=False),
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_index("ix_usage_requests_hour_key_model", "usage_requests", ["hour_s", "key", "model"])
    op.create_index("ix_usage_requests_key_time", "usage_requests", ["key", "time_us"])
    # JSON of limits.KeyLimits; NULL = no limits.
    with op.batch_alter_table("auth_tokens") as batch:
        batch.add_column(sa.Column("limits_json", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_tokens") as batch:
        batch.drop_column("limits_json")
    op.drop_index("ix_usage_requests_key_time", "usage_requests")
    op.drop_index("ix_usage_requests_hour_key_model", "usage_requests")
    op.drop_table("usage_requests")
