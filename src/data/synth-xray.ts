import type { Random } from "./synth-random.ts";
import {
  Raster,
  clip,
  ellipse,
  ellipsoid,
  moved,
  polygon,
  polyline,
  scaled,
  tube,
  union,
  type HalfPlane,
  type Point,
  type Shape,
} from "./synth-raster.ts";

/**
 * One procedural radiograph-like image per call: a long bone (bright cortex, dimmer marrow) in a
 * soft-tissue limb on a dark background, broken with the geometry of one of the tutorial's ten
 * fracture classes. Nuisance variation (angle, position, width, contrast, a second bone, a normal
 * joint, blur, noise, gamma) is shared by all classes so only the break tells them apart.
 */
export const SYNTH_CLASS_NAMES = [
  "Avulsion fracture",
  "Comminuted fracture",
  "Fracture Dislocation",
  "Greenstick fracture",
  "Hairline Fracture",
  "Impacted fracture",
  "Longitudinal fracture",
  "Oblique fracture",
  "Pathological fracture",
  "Spiral Fracture",
] as const;

export type SynthClassName = (typeof SYNTH_CLASS_NAMES)[number];

/** The bone's frame: axis from `start` along unit `along`, `across` its unit normal; lengths in image units. */
interface BoneFrame {
  readonly start: Point;
  readonly along: Point;
  readonly across: Point;
  readonly length: number;
  readonly outer: number;
  readonly inner: number;
  /** Axis position of the break. */
  readonly breakAt: number;
}

/** The point at axis position s and signed offset o across the bone. */
function at(frame: BoneFrame, s: number, o = 0): Point {
  return [
    frame.start[0] + s * frame.along[0] + o * frame.across[0],
    frame.start[1] + s * frame.along[1] + o * frame.across[1],
  ];
}

/** A direction rotated from the bone axis by angle (radians) towards `across`. */
function direction(frame: BoneFrame, angle: number): Point {
  const c = Math.cos(angle);
  const s = Math.sin(angle);
  return [c * frame.along[0] + s * frame.across[0], c * frame.along[1] + s * frame.across[1]];
}

function negate([x, y]: Point): Point {
  return [-x, -y];
}

/** The shaft between axis positions s0 and s1, with a condyle (rounded bone end) where asked. */
function shaft(frame: BoneFrame, s0: number, s1: number, knobAtStart: boolean, knobAtEnd: boolean): Shape {
  const parts: Shape[] = [tube(at(frame, s0), at(frame, s1), frame.outer, frame.inner)];
  const angle = Math.atan2(frame.along[1], frame.along[0]);
  // Condyles are mostly spongy bone: wider than the shaft but less dense than its cortex.
  const condyle = (s: number): Shape => scaled(ellipsoid(at(frame, s), 0.95 * frame.outer, 1.45 * frame.outer, angle), 0.5);
  if (knobAtStart) parts.push(condyle(s0 + 0.6 * frame.outer));
  if (knobAtEnd) parts.push(condyle(s1 - 0.6 * frame.outer));
  return union(parts);
}

/** A small irregular convex-ish polygon around a centre: a bone chip or comminution fragment. */
function fragment(random: Random, center: Point, radius: number): Shape {
  const corners = random.int(4, 7);
  const phase = random.uniform(0, 2 * Math.PI);
  const points: Point[] = [];
  for (let k = 0; k < corners; k++) {
    const angle = phase + (2 * Math.PI * (k + random.uniform(-0.3, 0.3))) / corners;
    const r = radius * random.uniform(0.6, 1.15);
    points.push([center[0] + r * Math.cos(angle), center[1] + r * Math.sin(angle)]);
  }
  return scaled(polygon(points), random.uniform(0.45, 0.7));
}

/** A jittered line from a to b (a crack), as a list of points. */
function crackPath(random: Random, a: Point, b: Point, steps: number, jitter: number): Point[] {
  const points: Point[] = [];
  const nx = -(b[1] - a[1]);
  const ny = b[0] - a[0];
  const norm = Math.hypot(nx, ny) || 1;
  for (let k = 0; k <= steps; k++) {
    const t = k / steps;
    const wobble = k === 0 || k === steps ? 0 : random.uniform(-jitter, jitter);
    points.push([a[0] + t * (b[0] - a[0]) + (wobble * nx) / norm, a[1] + t * (b[1] - a[1]) + (wobble * ny) / norm]);
  }
  return points;
}

/** What a class draws: bone pieces (added, so overlaps brighten) and dark cuts (attenuations). */
interface Break {
  readonly pieces: Shape[];
  readonly cuts: { shape: Shape; strength: number }[];
}

/** Keep the bone on the side of the plane through `point` that `normal` points to. */
function side(point: Point, normal: Point): HalfPlane {
  return { point, normal };
}

type BreakDrawer = (frame: BoneFrame, bone: Shape, random: Random, pixel: number) => Break;

const drawers: Record<SynthClassName, BreakDrawer> = {
  "Avulsion fracture": (frame, _bone, random) => {
    // The bone ends inside the image; a chip is pulled off the condyle's side, leaving a notch.
    const end = frame.length;
    const bone = shaft(frame, -0.2, end, false, true);
    const flank = random.sign();
    const s = end - frame.outer * random.uniform(0.7, 1.6);
    const notch = at(frame, s, flank * frame.outer * 0.95);
    const chipSize = frame.outer * random.uniform(0.32, 0.5);
    const pull = frame.outer * random.uniform(0.3, 0.6);
    const chipCenter = at(frame, s - random.uniform(0, 0.4) * frame.outer, flank * (frame.outer * 0.95 + pull));
    return {
      pieces: [bone, fragment(random, chipCenter, chipSize)],
      cuts: [{ shape: ellipse(notch, chipSize * 1.1, chipSize * 0.9, random.uniform(0, Math.PI)), strength: 0.95 }],
    };
  },
  "Comminuted fracture": (frame, bone, random) => {
    const gap = frame.outer * random.uniform(0.5, 0.9);
    const c = frame.breakAt;
    const upper = clip(bone, [side(at(frame, c - gap / 2), negate(direction(frame, random.uniform(-0.3, 0.3))))]);
    const lowerRaw = clip(bone, [side(at(frame, c + gap / 2), direction(frame, random.uniform(-0.3, 0.3)))]);
    const lower = moved(lowerRaw, at(frame, c), random.uniform(-0.12, 0.12), scale(frame.across, frame.outer * random.uniform(-0.3, 0.3)));
    const pieces = [upper, lower];
    const count = random.int(4, 6);
    for (let k = 0; k < count; k++) {
      const center = at(frame, c + frame.outer * random.uniform(-0.7, 0.7), frame.outer * random.uniform(-1.2, 1.2));
      pieces.push(fragment(random, center, frame.outer * random.uniform(0.3, 0.55)));
    }
    return { pieces, cuts: [] };
  },
  "Fracture Dislocation": (frame, _bone, random) => {
    // Two bones meet at a joint that has slipped: the distal bone is shifted and tilted, and a
    // small fragment lies by the joint.
    const joint = frame.breakAt;
    const space = frame.outer * random.uniform(0.25, 0.4);
    const upper = shaft(frame, -0.2, joint, false, true);
    const lowerInPlace = shaft(frame, joint + space, frame.length + 0.2, true, false);
    const shift = random.sign() * frame.outer * random.uniform(0.9, 1.7);
    const lower = moved(lowerInPlace, at(frame, joint), random.sign() * random.uniform(0.15, 0.45), scale(frame.across, shift));
    const chip = fragment(random, at(frame, joint + space / 2, -Math.sign(shift) * frame.outer * random.uniform(0.6, 1.1)), frame.outer * random.uniform(0.25, 0.4));
    return { pieces: [upper, lower, chip], cuts: [] };
  },
  "Greenstick fracture": (frame, bone, random, pixel) => {
    // Bent, not broken through: the distal part pivots on one cortex (which buckles) and a crack
    // opens on the other side, running only part of the way across.
    const c = frame.breakAt;
    const concave = random.sign();
    const bend = random.uniform(0.12, 0.28);
    const upper = clip(bone, [side(at(frame, c), negate(frame.along))]);
    const lowerRaw = clip(bone, [side(at(frame, c), frame.along)]);
    const pivot = at(frame, c, concave * frame.outer);
    // With this frame's handedness a rotation of −concave·bend lifts the convex corner away.
    const lower = moved(lowerRaw, pivot, -concave * bend, [0, 0]);
    const buckle = scaled(ellipsoid(at(frame, c, concave * frame.outer * 0.95), frame.outer * 0.3, frame.outer * 0.45, random.uniform(0, Math.PI)), 0.5);
    const crackDepth = random.uniform(0.8, 1.3);
    const crack = polyline(
      crackPath(random, at(frame, c, -concave * frame.outer * 1.05), at(frame, c + random.uniform(-0.2, 0.2) * frame.outer, concave * frame.outer * (1 - crackDepth)), 4, frame.outer * 0.1),
      Math.max(1.2 * pixel, frame.outer * 0.12),
    );
    return { pieces: [upper, lower, buckle], cuts: [{ shape: crack, strength: 0.75 }] };
  },
  "Hairline Fracture": (frame, _bone, random, pixel) => {
    const c = frame.breakAt;
    const tilt = random.uniform(-0.35, 0.35);
    const extent = frame.outer * random.uniform(0.75, 1.1);
    const d = direction(frame, Math.PI / 2 + tilt);
    const a: Point = [at(frame, c)[0] - extent * d[0], at(frame, c)[1] - extent * d[1]];
    const b: Point = [at(frame, c)[0] + extent * d[0], at(frame, c)[1] + extent * d[1]];
    const crack = polyline(crackPath(random, a, b, 6, frame.outer * 0.08), Math.max(1.2 * pixel, frame.outer * 0.08));
    return { pieces: [], cuts: [{ shape: crack, strength: random.uniform(0.45, 0.65) }] };
  },
  "Impacted fracture": (frame, bone, random) => {
    // The ends are driven into each other: the overlap band is denser, the bone a little crooked.
    const c = frame.breakAt;
    const overlap = frame.outer * random.uniform(0.25, 0.5);
    const upper = clip(bone, [side(at(frame, c + overlap), negate(direction(frame, random.uniform(-0.2, 0.2))))]);
    const lowerRaw = clip(bone, [side(at(frame, c - overlap), direction(frame, random.uniform(-0.2, 0.2)))]);
    const lower = moved(lowerRaw, at(frame, c), random.uniform(-0.09, 0.09), scale(frame.across, frame.outer * random.uniform(-0.25, 0.25)));
    const flare = scaled(ellipsoid(at(frame, c), frame.outer * 1.2, frame.outer * 0.35, Math.atan2(frame.across[1], frame.across[0])), 0.25);
    return { pieces: [upper, lower, flare], cuts: [] };
  },
  "Longitudinal fracture": (frame, _bone, random, pixel) => {
    const c = frame.breakAt;
    // Split along the shaft through one cortex (a split through the dim marrow alone barely shows).
    const half = frame.outer * random.uniform(2, 3.5);
    const offset = random.sign() * frame.outer * random.uniform(0.45, 0.75);
    const drift = frame.outer * random.uniform(-0.15, 0.15);
    const crack = polyline(crackPath(random, at(frame, c - half, offset - drift), at(frame, c + half, offset + drift), 8, frame.outer * 0.1), Math.max(1.5 * pixel, frame.outer * 0.16));
    return { pieces: [], cuts: [{ shape: crack, strength: random.uniform(0.65, 0.85) }] };
  },
  "Oblique fracture": (frame, bone, random) => {
    const c = frame.breakAt;
    const angle = random.sign() * random.uniform(0.55, 1.0);
    const normal = direction(frame, angle);
    const gap = frame.outer * random.uniform(0.12, 0.28);
    const center = at(frame, c);
    const upper = clip(bone, [side([center[0] - (gap / 2) * normal[0], center[1] - (gap / 2) * normal[1]], negate(normal))]);
    const lowerRaw = clip(bone, [side([center[0] + (gap / 2) * normal[0], center[1] + (gap / 2) * normal[1]], normal)]);
    const slide = frame.outer * random.uniform(-0.35, 0.35);
    const along: Point = [-normal[1], normal[0]];
    const lower = moved(lowerRaw, center, random.uniform(-0.1, 0.1), scale(along, slide));
    return { pieces: [upper, lower], cuts: [] };
  },
  "Pathological fracture": (frame, bone, random) => {
    // A lytic (dark) lesion weakens the shaft; a short transverse break runs through it.
    const c = frame.breakAt;
    const center = at(frame, c + frame.outer * random.uniform(-0.4, 0.4), frame.outer * random.uniform(-0.3, 0.3));
    const axisAngle = Math.atan2(frame.along[1], frame.along[0]);
    const lesion = ellipse(center, frame.outer * random.uniform(0.9, 1.6), frame.outer * random.uniform(0.6, 0.9), axisAngle + random.uniform(-0.3, 0.3));
    const normal = direction(frame, random.uniform(-0.25, 0.25));
    const gap = frame.outer * random.uniform(0.1, 0.2);
    const cut = at(frame, c);
    const upper = clip(bone, [side([cut[0] - (gap / 2) * normal[0], cut[1] - (gap / 2) * normal[1]], negate(normal))]);
    const lower = clip(bone, [side([cut[0] + (gap / 2) * normal[0], cut[1] + (gap / 2) * normal[1]], normal)]);
    const cuts = [{ shape: lesion, strength: random.uniform(0.65, 0.9) }];
    const spots = random.int(1, 3);
    for (let k = 0; k < spots; k++) {
      const spot = at(frame, c + frame.outer * random.uniform(-2, 2), frame.outer * random.uniform(-0.6, 0.6));
      const r = frame.outer * random.uniform(0.2, 0.4);
      cuts.push({ shape: ellipse(spot, r, r), strength: random.uniform(0.4, 0.6) });
    }
    return { pieces: [upper, moved(lower, cut, random.uniform(-0.08, 0.08), [0, 0])], cuts };
  },
  "Spiral Fracture": (frame, _bone, random, pixel) => {
    // A helix around the shaft projects to a sinusoid: the front half of the turn as a clear line,
    // the back half fainter.
    const c = frame.breakAt;
    const pitch = frame.outer * random.uniform(3, 5);
    const handedness = random.sign();
    const phase = random.uniform(-0.4, 0.4);
    const front: Point[] = [];
    const back: Point[] = [];
    const steps = 24;
    for (let k = 0; k <= steps; k++) {
      const theta = phase + (2 * Math.PI * k) / steps;
      const point = at(frame, c - pitch / 2 + (pitch * k) / steps, handedness * frame.outer * 0.98 * Math.cos(theta));
      if (k <= steps / 2) front.push(point);
      if (k >= steps / 2) back.push(point);
    }
    const width = Math.max(1.5 * pixel, frame.outer * 0.16);
    return {
      pieces: [],
      cuts: [
        { shape: polyline(front, width), strength: random.uniform(0.65, 0.85) },
        { shape: polyline(back, width * 0.8), strength: random.uniform(0.3, 0.45) },
      ],
    };
  },
};

function scale([x, y]: Point, k: number): Point {
  return [x * k, y * k];
}

/** Renders one image of the class as 8-bit grayscale pixels, row-major, size×size. */
export function renderSyntheticXray(className: SynthClassName, random: Random, size: number): Uint8Array {
  const pixel = 1 / size;
  const tilt = random.uniform(-0.2, 0.2);
  const along: Point = [Math.sin(tilt), Math.cos(tilt)];
  const across: Point = [Math.cos(tilt), -Math.sin(tilt)];
  const center: Point = [0.5 + random.uniform(-0.04, 0.04), 0.5 + random.uniform(-0.04, 0.04)];
  const outer = random.uniform(0.09, 0.12);
  const length = 1.5;
  const frame: BoneFrame = {
    start: [center[0] - (length / 2) * along[0], center[1] - (length / 2) * along[1]],
    along,
    across,
    length: length / 2 + random.uniform(0.12, 0.22),
    outer,
    inner: outer * random.uniform(0.45, 0.65),
    breakAt: length / 2 + random.uniform(-0.04, 0.04),
  };

  const tissue = new Raster(size, size);
  tissue.fill(random.uniform(0.03, 0.12));
  const limbOffset = outer * random.uniform(-0.8, 0.8);
  tissue.add(
    tube(at(frame, -0.5, limbOffset), at(frame, 2.5, limbOffset), outer * random.uniform(2.6, 3.6), 0),
    random.uniform(0.14, 0.28),
  );
  const gradient = random.uniform(-0.06, 0.06);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) tissue.data[y * size + x] = (tissue.data[y * size + x] ?? 0) + gradient * (x / size - 0.5);
  }

  const bones = new Raster(size, size);
  // A normal joint near the far end in some images of every class, so "a joint is visible" is
  // no give-away for the classes that need one.
  const withJoint = className !== "Avulsion fracture" && className !== "Fracture Dislocation" && random.chance(0.2);
  const shaftEnd = withJoint ? frame.length : frame.length + 0.5;
  const bone = shaft(frame, -0.2, shaftEnd, false, withJoint);
  const fracture = drawers[className](frame, bone, random, pixel);
  const pieces = fracture.pieces.length > 0 ? fracture.pieces : [bone];
  for (const piece of pieces) bones.add(piece, 1);
  if (withJoint) bones.add(shaft(frame, shaftEnd + outer * 0.3, shaftEnd + 0.8, true, false), 1);
  if (random.chance(0.3)) {
    // A thinner companion bone (as radius/ulna or tibia/fibula), always intact.
    const offset = random.sign() * outer * random.uniform(2.0, 2.6);
    const thin = outer * random.uniform(0.45, 0.65);
    bones.add(tube(at(frame, -0.3, offset), at(frame, 2.5, offset), thin, thin * random.uniform(0.4, 0.6)), 0.9);
  }
  for (const cut of fracture.cuts) bones.attenuate(cut.shape, cut.strength);
  bones.blur(random.uniform(0.3, 0.7) * (size / 64));

  const image = tissue;
  image.addRaster(bones, random.uniform(0.45, 0.7));
  image.blur(random.uniform(0.2, 0.5) * (size / 64));
  image.addGaussianNoise(random, random.uniform(0.005, 0.02));
  return image.toUint8(random.uniform(0.8, 1.2));
}
