// openai.test.mjs: the official openai SDK against a running sd-worker (SDW_URL, SDW_KEY set by
// tests/system/test_clients_openai.py): images.generate (b64_json, url, stream), models.list, and that
// errors raise the SDK's own classes.
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";

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

test("images.edit is refused until img2img exists", async () => {
  const { toFile } = await import("openai");
  const png = Buffer.from("89504e470d0a1a0a", "hex");
  await assert.rejects(client.images.edit({ image: await toFile(png, "a.png"), prompt: "x" }), (e) => {
    assert.equal(e.status, 501);
    return true;
  });
});
