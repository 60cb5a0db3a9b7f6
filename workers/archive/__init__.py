"""``streamwarden archive``: the compliance consumer, a Parquet copy of the verdicts and cut-offs,
and of the conversations they judged.

It reads the verdicts topic and the control topic as its own consumer group, and with
``with_text`` (the command's default; ``--no-text`` turns it off) the prompts and tokens topics
too, and writes hive-style partitioned Parquet datasets (``pyarrow.dataset``, pandas and DuckDB
read the ``date`` folder as a column)::

    <out>/verdicts/date=YYYY-MM-DD/verdicts-p<partition>-<first offset:020d>-<last offset:020d>.parquet
    <out>/cutoffs/date=YYYY-MM-DD/control-p<partition>-<first>-<last>.parquet
    <out>/prompts/date=YYYY-MM-DD/prompts-p<partition>-<first>-<last>.parquet
    <out>/chunks/date=YYYY-MM-DD/tokens-p<partition>-<first>-<last>.parquet
    <out>/undecodable/date=YYYY-MM-DD/<topic>-p<partition>-<first>-<last>.parquet

An event files under the UTC day of its ``ts_ms``. Every row carries its Kafka coordinates
(``kafka_partition``, ``kafka_offset``). Verdicts carry no tenant field yet, so the archive is
partitioned by day only; partitioning by tenant waits for the events to carry it. The text
tables hold what the producers sent (a prompt's ``messages`` or ``token_ids``, a chunk's ``text``
or ``token_ids``), so an auditor can see what each verdict judged and re-judge it
(``streamwarden audit``); without them the archive holds no conversation text at all.

Exactly once, by offsets in the files (as Kafka Connect's S3 sink does): each file holds records of
one topic-partition and covers one contiguous offset range, the one in its name, and the files of a
partition tile its offsets without gap or overlap across its table and ``undecodable``. A file is
written under a hidden temporary name, fsynced, renamed into place, and its folder fsynced; only
then are the offsets committed. On start and on every partition assignment the archiver deletes the leftover
temporary files of its partitions and resumes each partition right after the highest offset its
files hold, ignoring the group's committed offset when the files are ahead of it (a crash between
the rename and the commit). The committed offset is used only where it is ahead of the files
(files moved out of the directory are not archived again; to archive from scratch into an empty
directory, use a new ``--group-id``): the commit is for lag monitoring, not for correctness. Files
of the earlier layout (``<out>/date=.../verdicts-<ns>-<hex>.parquet``) are not read; the group's
committed offset carries on from where that archiver stopped.

Duplicates: across restarts the de-duplication key is the offset, so no record is written twice.
Within a run, a re-emitted verdict or cut-off (a worker's redelivery publishes it again with the
same ``event_id``, at a later offset) is dropped, and counted in the file's Parquet metadata
(``streamwarden.duplicates_dropped``; the file's range still covers its offset). A re-emission
whose first copy was archived by an earlier run is a distinct record at a distinct offset and is
kept, so the archive stays a faithful copy of the topic, and readers dedupe by ``event_id``
(a prompt or chunk sent twice is two sends, and both are kept: ``segments``)::

    SELECT DISTINCT ON (event_id) * FROM read_parquet('<out>/verdicts/**/*.parquet', hive_partitioning=true)
    ORDER BY event_id, kafka_partition, kafka_offset   -- the first copy of each verdict

Undecodable records are not lost: a verdict this archiver cannot decode is most likely one a newer
worker wrote (a ``schema_version`` it does not read yet, during a rolling upgrade), and a prompt or
chunk one the workers dead-lettered (the dead-letter topic holds a copy bounded to 64 KiB; this
table holds it whole). Each becomes a row of the
``undecodable`` table with its topic, coordinates, Kafka timestamp (its day folder), raw key and
value bytes unchanged, and the codec's ``reason``/``field``/``detail``, and is logged.

Offsets that expired from the topic before they were archived (an archiver stopped for longer than
the retention: one day on the control topic) are logged as an error with their range. Files that
hold offsets the topic does not have stop the archiver (``ArchiveAheadOfTopic``): the topic was
recreated, and one output directory belongs to one topic's lifetime.
"""

from __future__ import annotations

from workers.archive.layout import FileName, Table, remove_temporaries, scan, write_file
from workers.archive.rows import to_table
from workers.archive.run import ArchiveAheadOfTopic, Archived, archive, resume_at

__all__ = [
    "ArchiveAheadOfTopic",
    "Archived",
    "FileName",
    "Table",
    "archive",
    "remove_temporaries",
    "resume_at",
    "scan",
    "to_table",
    "write_file",
]
