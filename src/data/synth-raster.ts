import type { Random } from "./synth-random.ts";

/**
 * A grayscale float raster and the antialiased shapes the synthetic X-ray generator paints with.
 * Geometry is in normalised image units (x right, y down, both in [0, 1]) so one drawing renders
 * at any pixel size; antialiasing is supersampling on a SUBSAMPLES×SUBSAMPLES grid per pixel.
 */
export type Point = readonly [number, number];

/** [minX, minY, maxX, maxY] in normalised units. */
export type Box = readonly [number, number, number, number];

export interface Shape {
  readonly bounds: Box;
  /** The shape's value at a point: 0 outside, 1 inside for solid shapes, a density profile for bones. */
  valueAt(x: number, y: number): number;
}

const SUBSAMPLES = 3;

export class Raster {
  readonly data: Float32Array;

  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.data = new Float32Array(width * height);
  }

  fill(value: number): void {
    this.data.fill(value);
  }

  /** Adds weight × (shape value averaged over each pixel's subsamples). */
  add(shape: Shape, weight: number): void {
    this.forEachCoverage(shape, (index, coverage) => {
      this.data[index] = (this.data[index] ?? 0) + weight * coverage;
    });
  }

  /** Multiplies each pixel by (1 − strength × coverage): dark gaps, cracks and lytic lesions. */
  attenuate(shape: Shape, strength: number): void {
    this.forEachCoverage(shape, (index, coverage) => {
      this.data[index] = (this.data[index] ?? 0) * (1 - strength * Math.min(1, coverage));
    });
  }

  /** Adds another raster of the same size scaled by weight. */
  addRaster(other: Raster, weight: number): void {
    for (let i = 0; i < this.data.length; i++) this.data[i] = (this.data[i] ?? 0) + weight * (other.data[i] ?? 0);
  }

  /** Separable Gaussian blur; sigma in pixels, edges clamped. */
  blur(sigma: number): void {
    if (sigma <= 0.05) return;
    const radius = Math.max(1, Math.ceil(3 * sigma));
    const kernel = new Float32Array(2 * radius + 1);
    let total = 0;
    for (let k = -radius; k <= radius; k++) {
      const w = Math.exp(-(k * k) / (2 * sigma * sigma));
      kernel[k + radius] = w;
      total += w;
    }
    for (let k = 0; k < kernel.length; k++) kernel[k] = (kernel[k] ?? 0) / total;
    const { width, height } = this;
    const scratch = new Float32Array(this.data.length);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let sum = 0;
        for (let k = -radius; k <= radius; k++) {
          const sx = Math.min(width - 1, Math.max(0, x + k));
          sum += (kernel[k + radius] ?? 0) * (this.data[y * width + sx] ?? 0);
        }
        scratch[y * width + x] = sum;
      }
    }
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let sum = 0;
        for (let k = -radius; k <= radius; k++) {
          const sy = Math.min(height - 1, Math.max(0, y + k));
          sum += (kernel[k + radius] ?? 0) * (scratch[sy * width + x] ?? 0);
        }
        this.data[y * width + x] = sum;
      }
    }
  }

  addGaussianNoise(random: Random, sigma: number): void {
    for (let i = 0; i < this.data.length; i++) this.data[i] = (this.data[i] ?? 0) + sigma * random.normal();
  }

  /** Clamped to [0, 1], gamma applied, quantised to 8 bits. */
  toUint8(gamma = 1): Uint8Array {
    const out = new Uint8Array(this.data.length);
    for (let i = 0; i < this.data.length; i++) {
      const v = Math.min(1, Math.max(0, this.data[i] ?? 0));
      out[i] = Math.round(255 * Math.pow(v, gamma));
    }
    return out;
  }

  private forEachCoverage(shape: Shape, visit: (index: number, coverage: number) => void): void {
    const [minX, minY, maxX, maxY] = shape.bounds;
    const x0 = Math.max(0, Math.floor(minX * this.width));
    const y0 = Math.max(0, Math.floor(minY * this.height));
    const x1 = Math.min(this.width - 1, Math.ceil(maxX * this.width));
    const y1 = Math.min(this.height - 1, Math.ceil(maxY * this.height));
    const samples = SUBSAMPLES * SUBSAMPLES;
    for (let py = y0; py <= y1; py++) {
      for (let px = x0; px <= x1; px++) {
        let sum = 0;
        for (let sy = 0; sy < SUBSAMPLES; sy++) {
          const y = (py + (sy + 0.5) / SUBSAMPLES) / this.height;
          for (let sx = 0; sx < SUBSAMPLES; sx++) {
            sum += shape.valueAt((px + (sx + 0.5) / SUBSAMPLES) / this.width, y);
          }
        }
        if (sum !== 0) visit(py * this.width + px, sum / samples);
      }
    }
  }
}

function boundsOf(points: readonly Point[], margin: number): Box {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (const [x, y] of points) {
    minX = Math.min(minX, x);
    minY = Math.min(minY, y);
    maxX = Math.max(maxX, x);
    maxY = Math.max(maxY, y);
  }
  return [minX - margin, minY - margin, maxX + margin, maxY + margin];
}

/** Filled polygon (even–odd rule). */
export function polygon(points: readonly Point[]): Shape {
  return {
    bounds: boundsOf(points, 0),
    valueAt(x, y) {
      let inside = false;
      for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
        const [xi, yi] = points[i] ?? [0, 0];
        const [xj, yj] = points[j] ?? [0, 0];
        if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
      }
      return inside ? 1 : 0;
    },
  };
}

/**
 * An ellipse with radii rx, ry rotated by angle (radians), its value a function of ρ², the squared
 * normalised distance from the center (ρ² = 1 on the outline).
 */
function ellipticalShape(center: Point, rx: number, ry: number, angle: number, valueAtRho2: (rho2: number) => number): Shape {
  const [cx, cy] = center;
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const r = Math.max(rx, ry);
  return {
    bounds: [cx - r, cy - r, cx + r, cy + r],
    valueAt(x, y) {
      const dx = x - cx;
      const dy = y - cy;
      const u = (dx * cos + dy * sin) / rx;
      const v = (-dx * sin + dy * cos) / ry;
      return valueAtRho2(u * u + v * v);
    },
  };
}

/** Filled ellipse with radii rx, ry rotated by angle (radians). */
export function ellipse(center: Point, rx: number, ry: number, angle = 0): Shape {
  return ellipticalShape(center, rx, ry, angle, (rho2) => (rho2 <= 1 ? 1 : 0));
}

/** Projection of a solid ellipsoid: √(1 − ρ²), the soft density of a bone end or a soft-tissue mass. */
export function ellipsoid(center: Point, rx: number, ry: number, angle = 0): Shape {
  return ellipticalShape(center, rx, ry, angle, (rho2) => (rho2 < 1 ? Math.sqrt(1 - rho2) : 0));
}

function distanceToSegment(x: number, y: number, a: Point, b: Point): number {
  const [ax, ay] = a;
  const [bx, by] = b;
  const dx = bx - ax;
  const dy = by - ay;
  const lengthSquared = dx * dx + dy * dy;
  const t = lengthSquared === 0 ? 0 : Math.min(1, Math.max(0, ((x - ax) * dx + (y - ay) * dy) / lengthSquared));
  return Math.hypot(x - (ax + t * dx), y - (ay + t * dy));
}

/** A stroked polyline of the given width with round joins and caps. */
export function polyline(points: readonly Point[], width: number): Shape {
  const half = width / 2;
  return {
    bounds: boundsOf(points, half),
    valueAt(x, y) {
      for (let i = 1; i < points.length; i++) {
        const a = points[i - 1];
        const b = points[i];
        if (a && b && distanceToSegment(x, y, a, b) <= half) return 1;
      }
      return 0;
    },
  };
}

/**
 * A long bone seen in projection: a hollow cylinder from a to b with outer and inner (medullary)
 * radius. The value is the X-ray path length through cortical bone divided by the outer radius, so
 * edges are bright and the middle dimmer, as on a radiograph.
 */
export function tube(a: Point, b: Point, outerRadius: number, innerRadius: number): Shape {
  const [ax, ay] = a;
  const [bx, by] = b;
  const length = Math.hypot(bx - ax, by - ay);
  const ux = (bx - ax) / length;
  const uy = (by - ay) / length;
  const R2 = outerRadius * outerRadius;
  const r2 = innerRadius * innerRadius;
  return {
    bounds: boundsOf([a, b], outerRadius),
    valueAt(x, y) {
      const along = (x - ax) * ux + (y - ay) * uy;
      if (along < 0 || along > length) return 0;
      const across = -(x - ax) * uy + (y - ay) * ux;
      const d2 = across * across;
      if (d2 >= R2) return 0;
      const cortex = Math.sqrt(R2 - d2) - (d2 < r2 ? Math.sqrt(r2 - d2) : 0);
      return cortex / outerRadius;
    },
  };
}

/** The shape's values multiplied by k (a fragment's density relative to a full cortex). */
export function scaled(shape: Shape, k: number): Shape {
  return { bounds: shape.bounds, valueAt: (x, y) => k * shape.valueAt(x, y) };
}

/** Pointwise maximum: overlapping parts of one bone do not double in density. */
export function union(shapes: readonly Shape[]): Shape {
  const bounds = boundsOf(
    shapes.flatMap((s) => [
      [s.bounds[0], s.bounds[1]] as const,
      [s.bounds[2], s.bounds[3]] as const,
    ]),
    0,
  );
  return {
    bounds,
    valueAt(x, y) {
      let best = 0;
      for (const shape of shapes) best = Math.max(best, shape.valueAt(x, y));
      return best;
    },
  };
}

/** A half-plane through `point` keeping the side `normal` points to. */
export interface HalfPlane {
  readonly point: Point;
  readonly normal: Point;
}

/** The part of a shape on the kept side of every half-plane (a bone fragment after a clean break). */
export function clip(shape: Shape, halfPlanes: readonly HalfPlane[]): Shape {
  return {
    bounds: shape.bounds,
    valueAt(x, y) {
      for (const { point, normal } of halfPlanes) {
        if ((x - point[0]) * normal[0] + (y - point[1]) * normal[1] < 0) return 0;
      }
      return shape.valueAt(x, y);
    },
  };
}

/** The shape rotated by `angle` about `pivot`, then shifted by `offset` (a displaced fragment). */
export function moved(shape: Shape, pivot: Point, angle: number, offset: Point): Shape {
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const [px, py] = pivot;
  const forward = ([x, y]: Point): Point => [
    px + (x - px) * cos - (y - py) * sin + offset[0],
    py + (x - px) * sin + (y - py) * cos + offset[1],
  ];
  const [minX, minY, maxX, maxY] = shape.bounds;
  const corners = [forward([minX, minY]), forward([maxX, minY]), forward([minX, maxY]), forward([maxX, maxY])];
  return {
    bounds: boundsOf(corners, 0),
    valueAt(x, y) {
      const dx = x - px - offset[0];
      const dy = y - py - offset[1];
      return shape.valueAt(px + dx * cos + dy * sin, py - dx * sin + dy * cos);
    },
  };
}
