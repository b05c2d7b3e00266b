"""The PostgreSQL fixture really reaches a private schema (and CI refuses to run without it)."""

import psycopg
import pytest


@pytest.mark.postgres
def test_postgres_fixture_gives_private_schema(postgres_url: str) -> None:
    schema = postgres_url.rsplit("%3D", 1)[1]
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    with psycopg.connect(plain, options=f"-csearch_path={schema}") as conn:
        conn.execute("create table probe (id int)")
        conn.execute("insert into probe values (1)")
        (found,) = conn.execute(
            "select count(*) from information_schema.tables where table_schema = %s", (schema,)
        ).fetchone()
    assert found == 1
