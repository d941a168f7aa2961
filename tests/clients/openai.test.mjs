// openai.test.mjs: the official openai SDK against a running sd-worker (SDW_URL, SDW_KEY set by
// tests/system/test_clients_openai.py): images.generate (b64_json, url, stream, partial images), images.edit (with a
// mask, url, extension fields), models.list, and that errors raise the SDK's own classes.
import assert from "node:assert/strict";
import { test } from "node:test";
import zlib from "node:zlib";
import OpenAI, { toFile } from "openai";

const base = process.env.SDW_URL;
const key = process.env.SDW_KEY;
const client = new OpenAI({ apiKey: key, baseURL: base + "/v1", maxRetries: 0, timeout: 120000 });
// our extensions ride along in the body; the SDK sends unknown keys as they are
const small = { size: "64x64", steps: 2, seed: 7 };
const PNG = [0x89, 0x50, 0x4e, 0x47];

test("images.generate b64_json", async () => {
  const r = await client.images.generate({ prompt: "a red cube", response_format: "b64_json", ...small });
  assert.equal(typeof r.created, "number");
  assert.equal(r.data.length, 1);
  const png = Buffer.from(r.data[0].b64_json, "base64");
  assert.deepEqual([...png.subarray(0, 4)], PNG);
  assert.equal(png.readUInt32BE(16), 64);
});

test("images.generate url", async () => {
  const r = await client.images.generate({ prompt: "a red cube", model: "dall-e-2", response_format: "url", ...small });
  const url = r.data[0].url;
  assert.match(url, /^http:\/\/.*\/v1\/jobs\/[^/]+\/image$/);
  const img = await fetch(url, { headers: { Authorization: "Bearer " + key } });
  assert.equal(img.status, 200);
  assert.equal(img.headers.get("content-type"), "image/png");
  assert.deepEqual([...new Uint8Array(await img.arrayBuffer()).subarray(0, 4)], PNG);
  const anon = await fetch(url);
  assert.equal(anon.status, 401, "the image url needs the key too");
});

test("images.generate stream", async () => {
  const stream = await client.images.generate({ prompt: "a red cube", stream: true, partial_images: 2, ...small });
  const events = [];
  for await (const ev of stream) events.push(ev);
  assert.ok(events.length >= 1);
  const last = events[events.length - 1];
  assert.equal(last.type, "image_generation.completed");
  assert.deepEqual([...Buffer.from(last.b64_json, "base64").subarray(0, 4)], PNG);
  assert.equal(last.size, "64x64");
});

test("images.generate stream with partial_images", async () => {
  // 12 steps and 2 partials: previews at steps 4 and 8 (each ~0.2 s of the tiny model apart), none at 12
  const stream = await client.images.generate({
    prompt: "a red cube", stream: true, partial_images: 2, size: "128x128", steps: 12, seed: 7,
  });
  const events = [];
  for await (const ev of stream) events.push(ev);
  const partials = events.filter((e) => e.type === "image_generation.partial_image");
  assert.equal(partials.length, 2, JSON.stringify(events.map((e) => e.type)));
  assert.deepEqual(partials.map((e) => e.partial_image_index), [0, 1]);
  for (const p of partials) {
    const png = Buffer.from(p.b64_json, "base64");
    assert.deepEqual([...png.subarray(0, 4)], PNG);
    assert.ok(png.readUInt32BE(16) <= 256 && png.readUInt32BE(20) <= 256);
    assert.equal(p.size, "128x128");
    assert.equal(p.output_format, "png");
    assert.equal(typeof p.created_at, "number");
  }
  assert.notDeepEqual(partials[0].b64_json, partials[1].b64_json);
  assert.equal(events.length, 3);
  assert.equal(events[2].type, "image_generation.completed");
  assert.equal(Buffer.from(events[2].b64_json, "base64").readUInt32BE(16), 128);
});

test("models.list and retrieve", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ["systest-tiny"]);
  const m = await client.models.retrieve("systest-tiny");
  assert.equal(m.object, "model");
  await assert.rejects(client.models.retrieve("no-such-model"), OpenAI.NotFoundError);
});

test("a wrong key raises AuthenticationError", async () => {
  const bad = new OpenAI({ apiKey: "sk-not-a-key-of-this-service", baseURL: base + "/v1", maxRetries: 0 });
  await assert.rejects(bad.images.generate({ prompt: "x", ...small }), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
    assert.equal(e.status, 401);
    return true;
  });
});

test("a bad size raises BadRequestError naming size", async () => {
  await assert.rejects(client.images.generate({ prompt: "x", size: "63x64" }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, "size");
    return true;
  });
  await assert.rejects(client.images.generate({ prompt: "x", size: "big" }), OpenAI.BadRequestError);
});

test("n = 2 gives two images (seeds 7 and 8); beyond limits.max_batch raises BadRequestError naming n", async () => {
  const r = await client.images.generate({ prompt: "a red cube", n: 2, response_format: "b64_json", ...small });
  assert.equal(r.data.length, 2);
  const pngs = r.data.map((d) => Buffer.from(d.b64_json, "base64"));
  for (const png of pngs) assert.deepEqual([...png.subarray(0, 4)], PNG);
  assert.ok(!pngs[0].equals(pngs[1]), "two different images");
  assert.ok(pngs[1].includes("Seed: 8,"), "image 1 has seed 8");
  const u = await client.images.generate({ prompt: "a red cube", n: 2, response_format: "url", ...small });
  assert.match(u.data[0].url, /\/v1\/jobs\/[^/]+\/image$/);
  assert.match(u.data[1].url, /\/v1\/jobs\/[^/]+\/image\?index=1$/);
  const img = await fetch(u.data[1].url, { headers: { Authorization: "Bearer " + key } });
  assert.equal(img.status, 200);
  assert.ok(Buffer.from(await img.arrayBuffer()).equals(pngs[1]), "the url serves image 1");
  await assert.rejects(client.images.generate({ prompt: "x", n: 5, ...small }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, "n");
    return true;
  });
});

// A w x h 8-bit PNG (colour type 2 RGB or 6 RGBA) from pixel(x, y) -> [r, g, b, a].
function png(w, h, alpha, pixel) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const nch = alpha ? 4 : 3;
  const raw = Buffer.alloc(h * (1 + w * nch));
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const p = pixel(x, y);
      for (let c = 0; c < nch; c++) raw[y * (1 + w * nch) + 1 + x * nch + c] = p[c];
    }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = alpha ? 6 : 2;
  return Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), chunk("IHDR", ihdr),
    chunk("IDAT", zlib.deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}

const photo = png(64, 64, false, (x, y) => [(x * 4) % 256, (y * 4) % 256, 128]);
// OpenAI's convention: the transparent part of the mask is what gets edited
const topMask = png(64, 64, true, (x, y) => [0, 0, 0, y < 32 ? 0 : 255]);
const editSmall = { prompt: "a cat", steps: 2, seed: 9 };

test("images.edit with a mask", async () => {
  const r = await client.images.edit({
    image: await toFile(photo, "photo.png", { type: "image/png" }),
    mask: await toFile(topMask, "mask.png", { type: "image/png" }),
    ...editSmall,
  });
  assert.equal(r.data.length, 1);
  assert.equal(r.size, "64x64", "the size defaults to the image's");
  const out = Buffer.from(r.data[0].b64_json, "base64");
  assert.deepEqual([...out.subarray(0, 4)], PNG);
  assert.equal(out.readUInt32BE(16), 64);
  // the mask matters: the same edit without one is another image; the same seed gives the same edit
  const plain = await client.images.edit({ image: await toFile(photo, "photo.png"), ...editSmall });
  assert.notEqual(plain.data[0].b64_json, r.data[0].b64_json);
  const again = await client.images.edit({
    image: await toFile(photo, "photo.png"),
    mask: await toFile(topMask, "mask.png"),
    ...editSmall,
  });
  assert.equal(again.data[0].b64_json, r.data[0].b64_json, "same seed, same edit");
});

test("images.edit url answer and extension fields", async () => {
  const r = await client.images.edit({
    image: await toFile(photo, "photo.png"),
    response_format: "url",
    size: "64x64",
    strength: 0.5,
    negative_prompt: "fog",
    ...editSmall,
  });
  assert.match(r.data[0].url, /\/v1\/jobs\/[^/]+\/image$/);
});

test("images.edit with a mask of another size raises BadRequestError naming mask", async () => {
  const small = png(32, 32, true, () => [0, 0, 0, 0]);
  await assert.rejects(
    client.images.edit({ image: await toFile(photo, "p.png"), mask: await toFile(small, "m.png"), ...editSmall }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.param, "mask");
      assert.match(e.message, /32x32/);
      return true;
    },
  );
});

test("images.edit with a broken image raises BadRequestError naming image", async () => {
  await assert.rejects(
    client.images.edit({ image: await toFile(photo.subarray(0, 50), "p.png"), ...editSmall }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.param, "image");
      return true;
    },
  );
});
