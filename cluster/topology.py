"""Who is where: the format record every drive carries, and the erasure sets built from it.

Sets are formed once, when the drives are formatted, and written into every drive's
format.json (cluster id, pool, set, position and the ids of all drives of the set). From
then on a drive knows its slot, so a set can be rebuilt from whichever drives show up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class DriveFormat:
    cluster_id: str
    drive_id: str
    pool: int
    set: int
    position: int
    ec: str  # "K+M"
    stripe_size: int
    set_drives: list[str]  # drive ids of the set, by position
    version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DriveFormat:
        data = json.loads(text)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format.json version {data.get('version')!r}")
        return cls(**data)

    def same_set(self, other: DriveFormat) -> bool:
        return (
            self.cluster_id == other.cluster_id
            and (self.pool, self.set) == (other.pool, other.set)
            and self.set_drives == other.set_drives
            and self.ec == other.ec
            and self.stripe_size == other.stripe_size
        )
