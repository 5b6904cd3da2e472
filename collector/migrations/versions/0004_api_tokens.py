"""api tokens

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('token_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=True),
    sa.Column('account', sa.String(length=256), nullable=True),
    sa.Column('secret_hash', sa.String(length=256), nullable=False),
    sa.Column('created_at_s', sa.Float(), nullable=False),
    sa.Column('revoked_at_s', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('token_id')
    )


def downgrade() -> None:
    op.drop_table('api_tokens')
