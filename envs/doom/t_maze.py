"""drl's Doom memory task: a T-maze whose correct arm is told by a cue that is gone long before the choice.

Each episode starts in a small *cue room* whose walls are red or blue (drawn at random per episode). A few steps
ahead, a line across the room teleports the player (no fog, same facing) into a *maze* that is the same for both
cues: a corridor north to a T-junction with a west and an east arm. Red means west, blue means east. Reaching the
end of the correct arm gives +1 and ends the episode; the wrong arm ends it with nothing. The cue room is a separate
area, never in view from the maze, so after the teleport no frame says which cue was shown: an agent that sees only
its last few frames (a 4-frame stack) is at chance, 0.5, by construction.

The geometry lives here once; ``write_wad`` builds the WAD from it (``python -m drl.envs.doom.t_maze`` rewrites the
committed ones) and ``TMazeRules`` turns the player's position into the episode's outcome. A WAD holds two maps of
identical geometry, MAP01 (red cue) and MAP02 (blue cue); the env picks one per episode. UDMF text, no nodes lump:
ViZDoom builds the nodes when it loads the map.

Coordinates are Doom map units (y points north; the player moves ~30 units per agent step at frame skip 4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MAPS_DIR = Path(__file__).resolve().parent / "maps"

#: cue -> (map name, wall texture); cue 0 = red = the west arm, cue 1 = blue = the east arm
CUES = (("map01", "REDWALL"), ("map02", "COMPBLUE"))


@dataclass(frozen=True)
class TMazeGeometry:
    """The layout in map units. The maze is centred on x = ``maze_x``; its corridor runs from y = 0 to
    ``corridor_length``, the arms from x = maze_x ± half_width to maze_x ± (half_width + arm_length)."""

    corridor_length: int = 512  # the delay: ~15 agent steps of walking from the teleport to the junction
    half_width: int = 32  # corridor and arm half width
    arm_length: int = 192
    goal_depth: int = 96  # how far into an arm (past the corridor's side wall) the choice is made
    maze_x: int = 1024  # the maze sits apart from the cue room (x in [-64, 64]): never in view
    cue_room_depth: int = 192  # the cue room spans y in [-64, cue_room_depth]
    teleport_y: int = 64  # the teleport line across the cue room (the player starts at y = 0)

    def outcome(self, x: float, y: float) -> int | None:
        """The arm the player at (x, y) has chosen: 0 (west), 1 (east) or None (not yet, or still in the cue
        room, which lies west of the maze)."""
        if y < self.corridor_length:
            return None
        reach = self.half_width + self.goal_depth
        if x <= self.maze_x - reach:
            return 0
        if x >= self.maze_x + reach:
            return 1
        return None


#: the task variants: the scenario name -> its geometry and WAD file
VARIANTS: dict[str, TMazeGeometry] = {
    "t_maze": TMazeGeometry(),
    # three times the delay (~45 agent steps between the last cue frame and the junction): longer than the
    # sequences DRQN trains on by default, so it measures what the stored LSTM state carries across sequences
    "t_maze_long": TMazeGeometry(corridor_length=1536),
}


def wad_path(variant: str) -> Path:
    return MAPS_DIR / f"{variant}.wad"


# ------------------------------------------------------------------------------------------------ UDMF text


def _block(kind: str, **fields) -> str:
    body = "".join(f"  {k} = {_value(v)};\n" for k, v in fields.items())
    return f"{kind}\n{{\n{body}}}\n"


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def textmap(geo: TMazeGeometry, cue_texture: str) -> str:
    """The UDMF TEXTMAP of one map: sector 0 and 1 the cue room (split by the teleport line), sector 2 the maze."""
    vertices: list[tuple[int, int]] = []
    lines: list[str] = []
    sides: list[str] = []

    def vertex(x: int, y: int) -> int:
        vertices.append((x, y))
        return len(vertices) - 1

    def side(sector: int, texture: str | None) -> int:
        sides.append(_block("sidedef", sector=sector, **({"texturemiddle": texture} if texture else {})))
        return len(sides) - 1

    def wall(a: int, b: int, sector: int, texture: str) -> None:
        """One-sided wall a -> b; list a room's corners clockwise so its inside is on each wall's front (right)."""
        lines.append(_block("linedef", v1=a, v2=b, sidefront=side(sector, texture), blocking=True))

    # cue room: two sectors, the south one (player start) and the north one, the teleport line between them
    w, t, d = 64, geo.teleport_y, geo.cue_room_depth
    sw, nw_mid, ne_mid, se = vertex(-w, -64), vertex(-w, t), vertex(w, t), vertex(w, -64)
    nw, ne = vertex(-w, d), vertex(w, d)
    wall(sw, nw_mid, 0, cue_texture)
    wall(ne_mid, se, 0, cue_texture)
    wall(se, sw, 0, cue_texture)
    wall(nw_mid, nw, 1, cue_texture)
    wall(nw, ne, 1, cue_texture)
    wall(ne, ne_mid, 1, cue_texture)
    # the teleport line runs west -> east, so its front faces south, the start sector (special 71:
    # Teleport_NoFog(tid 1), to the destination's angle; crossing it from either side fires it)
    lines.append(
        _block(
            "linedef",
            v1=nw_mid,
            v2=ne_mid,
            sidefront=side(0, None),
            sideback=side(1, None),
            twosided=True,
            special=71,
            arg0=1,
            arg1=0,
            playercross=True,
        )
    )
    # the maze: a T, corners clockwise
    cx, hw, arm, cl = geo.maze_x, geo.half_width, geo.arm_length, geo.corridor_length
    corners = [
        (cx - hw, 0),
        (cx - hw, cl),
        (cx - hw - arm, cl),
        (cx - hw - arm, cl + 2 * hw),
        (cx + hw + arm, cl + 2 * hw),
        (cx + hw + arm, cl),
        (cx + hw, cl),
        (cx + hw, 0),
    ]
    ids = [vertex(x, y) for x, y in corners]
    for a, b in zip(ids, ids[1:] + ids[:1]):
        wall(a, b, 2, "STARTAN2")

    # things present at every skill level in single-player games
    in_every_game = dict(skill1=True, skill2=True, skill3=True, skill4=True, skill5=True, single=True)
    sector = dict(heightfloor=0, heightceiling=128, texturefloor="FLOOR0_1", textureceiling="CEIL1_1", lightlevel=192)
    parts = ['namespace = "zdoom";\n']
    parts += [
        _block("thing", x=0.0, y=0.0, angle=90, type=1, **in_every_game),  # the player start
        # the teleport destination (ZDoom's TeleportDest, type 9044, tid 1) at the corridor's south end
        _block("thing", id=1, x=float(cx), y=32.0, angle=90, type=9044, **in_every_game),
    ]
    parts += [_block("vertex", x=float(x), y=float(y)) for x, y in vertices]
    parts += lines + sides
    parts += [_block("sector", **sector) for _ in range(3)]
    return "".join(parts)


def wad_bytes(geo: TMazeGeometry) -> bytes:
    """A PWAD: for each cue its map marker, TEXTMAP and ENDMAP lumps (12-byte header, lumps, 16-byte entries)."""
    lumps: list[tuple[str, bytes]] = []
    for map_name, texture in CUES:
        lumps += [(map_name.upper(), b""), ("TEXTMAP", textmap(geo, texture).encode()), ("ENDMAP", b"")]
    data, directory, offset = b"", b"", 12
    for name, body in lumps:
        directory += struct.pack("<ii8s", offset, len(body), name.encode())
        data += body
        offset += len(body)
    return b"PWAD" + struct.pack("<ii", len(lumps), offset) + data + directory


def write_wad(variant: str, path: Path | None = None) -> Path:
    path = path or wad_path(variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wad_bytes(VARIANTS[variant]))
    return path


if __name__ == "__main__":
    for name in VARIANTS:
        print(write_wad(name))
