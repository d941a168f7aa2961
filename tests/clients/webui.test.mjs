// webui.test.mjs: Debian's Chromium, driven by playwright-core, uses the built-in page of a running
// sd-worker (SDW_URL, SDW_KEY, SDW_SHOT from tests/system/test_clients_webui.py): enters the key, fills
// the form by keyboard, picks a LoRA, uploads an init image and paints a mask on it (mouse and keyboard),
// watches progress, a live preview and the image arrive, cancels a second job, saves a screenshot.
import assert from "node:assert/strict";
import { test } from "node:test";
import { chromium } from "playwright-core";

const base = process.env.SDW_URL;

test("the page generates, shows progress, cancels", async () => {
  const browser = await chromium.launch({
    executablePath: process.env.SDW_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 820 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(base + "/");
    // the lists need the key: the page asks for it once
    await page.locator("#keydlg[open]").waitFor({ timeout: 10000 });
    await page.keyboard.type(process.env.SDW_KEY);
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.querySelectorAll("#sampler option").length >= 4);
    assert.equal(await page.evaluate(() => localStorage.getItem("sdw_api_key")), process.env.SDW_KEY);

    // every control has a name a screen reader can say
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input, select, textarea, canvas[tabindex]")]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
      .map((el) => el.id || el.outerHTML.slice(0, 60)));
    assert.deepEqual(unlabelled, []);

    // the LoRA picker lists model.lora_dir; add one with a weight, from the keyboard
    await page.waitForFunction(() => [...document.querySelectorAll("#lorapick option")].some((o) => o.value === "style"));
    await page.focus("#lorapick");
    await page.selectOption("#lorapick", "style");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Control+A");
    await page.keyboard.type("0.8");
    await page.keyboard.press("Enter");
    assert.equal(await page.locator("#loras li").count(), 1);
    assert.notEqual(await page.textContent("#msg"), "Write a prompt first.", "Enter in the weight does not submit");

    // an init image: made here as a PNG, uploaded through the file input; the size follows it
    const initB64 = await page.evaluate(() => {
      const c = document.createElement("canvas");
      c.width = 128; c.height = 96;
      const g = c.getContext("2d"), grd = g.createLinearGradient(0, 0, 128, 96);
      grd.addColorStop(0, "#2456c7"); grd.addColorStop(1, "#f2a900");
      g.fillStyle = grd; g.fillRect(0, 0, 128, 96);
      return c.toDataURL("image/png").split(",")[1];
    });
    await page.setInputFiles("#initfile", { name: "init.png", mimeType: "image/png", buffer: Buffer.from(initB64, "base64") });
    await page.locator("#maskcv").waitFor({ state: "visible" });
    await page.waitForFunction(() => document.getElementById("maskcv").width === 128);
    assert.equal(await page.inputValue("#width"), "128");
    assert.equal(await page.inputValue("#height"), "96");
    const painted = () => page.evaluate(() => { const m = maskExport(); return m ? m.fraction : 0; });
    assert.equal(await painted(), 0);

    // the mask from the keyboard: focus the canvas, Shift+arrows paint, Space stamps
    await page.focus("#maskcv");
    for (let i = 0; i < 3; i++) await page.keyboard.press("Shift+ArrowRight");
    await page.keyboard.press(" ");
    const byKeys = await painted();
    assert.ok(byKeys > 0.02, "keyboard painted " + byKeys);
    await page.click("#maskclear");
    assert.equal(await painted(), 0);
    // invert twice is the same mask
    await page.click("#maskinvert");
    assert.equal(await painted(), 1);
    await page.click("#maskinvert");
    assert.equal(await painted(), 0);
    // and with the mouse: one stroke across the middle
    const box = await page.locator("#maskcv").boundingBox();
    await page.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.5);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.5, { steps: 8 });
    await page.mouse.up();
    const byMouse = await painted();
    assert.ok(byMouse > 0.05 && byMouse < 0.5, "mouse painted " + byMouse);
    if (process.env.SDW_SHOT) await page.screenshot({ path: process.env.SDW_SHOT.replace(/\.png$/, "-mask.png"), fullPage: true });

    // what the page sends, and every live preview it shows
    const bodies = [];
    page.on("request", (r) => { if (r.method() === "POST" && r.url().endsWith("/v1/jobs")) bodies.push(r.postDataJSON()); });
    await page.evaluate(() => {
      window.previews = [];
      new MutationObserver(() => { const s = document.getElementById("preview").getAttribute("src"); if (s) window.previews.push(s); })
        .observe(document.getElementById("preview"), { attributes: true, attributeFilter: ["src"] });
    });

    // keyboard only: focus the prompt, type, tab through the fields
    await page.focus("#prompt");
    await page.keyboard.type("a small lighthouse, keyboard only");
    await page.keyboard.press("Tab");
    await page.keyboard.type("blurry");
    for (const [id, v] of [["#steps", "40"]]) {
      await page.fill(id, v);
    }
    await page.selectOption("#sampler", "euler_a");
    await page.selectOption("#schedule", "karras");
    // bf16 is offered exactly when a worker runs it (GET /ready); take it when it is
    const ready = await fetch(base + "/ready").then((r) => r.json());
    const bf16 = ready.workers.some((w) => w.bf16);
    await page.waitForFunction((want) => document.querySelector("#precision").options[1].disabled === !want, bf16);
    if (bf16) await page.selectOption("#precision", "bf16");
    // record every progress value the bar shows
    await page.evaluate(() => {
      window.seen = [];
      new MutationObserver(() => window.seen.push(document.getElementById("msg").textContent)).observe(
        document.getElementById("msg"), { childList: true, characterData: true, subtree: true });
    });
    await page.keyboard.press("Control+Enter");
    await page.locator("#gallery figure").first().waitFor({ timeout: 120000 });
    const seen = await page.evaluate(() => window.seen);
    assert.ok(seen.some((t) => /^Step \d+ of \d+$/.test(t)), "progress shown: " + JSON.stringify(seen));
    const img = page.locator("#gallery figure img").first();
    await page.waitForFunction(() => document.querySelector("#gallery img").naturalWidth === 128);
    assert.equal(await page.evaluate(() => document.querySelector("#gallery img").naturalHeight), 96);
    assert.match(await img.getAttribute("src"), /^blob:/);
    const caption = await page.locator("#gallery figcaption").first().textContent();
    assert.match(caption, /40 steps · euler_a\/karras/);
    assert.match(caption, /LoRA style:0\.8 · inpainted, strength 0\.75/);
    assert.equal(/ · bf16$/.test(caption), bf16, "the caption says bf16 when the job ran in it: " + caption);

    // the job carried the LoRA, the init image as sent, the mask as white on black of its size
    assert.equal(bodies.length, 1);
    const b = bodies[0];
    assert.deepEqual(b.loras, [{ name: "style", weight: 0.8 }]);
    assert.equal(b.strength, 0.75);
    assert.equal(b.mask_blur, 4);
    assert.equal(b.preview_every, 4);
    assert.equal(b.precision, bf16 ? "bf16" : undefined);
    const decoded = await page.evaluate(async ([init, mask]) => {
      const load = async (b64) => {
        const im = new Image();
        im.src = "data:image/png;base64," + b64;
        await im.decode();
        const c = document.createElement("canvas");
        c.width = im.naturalWidth; c.height = im.naturalHeight;
        const g = c.getContext("2d");
        g.drawImage(im, 0, 0);
        return { w: c.width, h: c.height, px: g.getImageData(0, 0, c.width, c.height).data };
      };
      const i = await load(init), m = await load(mask);
      let white = 0, other = 0;
      for (let k = 0; k < m.px.length; k += 4) {
        const v = m.px[k];
        if (v === 255 && m.px[k + 1] === 255 && m.px[k + 2] === 255) white++;
        else if (v !== 0 || m.px[k + 1] !== 0 || m.px[k + 2] !== 0) other++;
      }
      return { iw: i.w, ih: i.h, mw: m.w, mh: m.h, white, other };
    }, [b.init_image, b.mask]);
    assert.deepEqual([decoded.iw, decoded.ih, decoded.mw, decoded.mh, decoded.other], [128, 96, 128, 96, 0]);
    assert.ok(decoded.white / (128 * 96) > 0.05, "mask white " + decoded.white);

    // live previews arrived while it ran, each a PNG the browser shows; gone once the image is in
    const previews = await page.evaluate(() => window.previews);
    assert.ok(previews.length >= 1, "no live preview");
    assert.ok(await page.evaluate(async (src) => { const im = new Image(); im.src = src; await im.decode(); return im.naturalWidth > 0; },
      previews[previews.length - 1]));
    assert.equal(await page.isHidden("#livebox"), true);
    assert.equal(await page.locator("#gallery figcaption a").first().getAttribute("download") !== null, true);

    // a second, long job (txt2img: the init image removed): cancel it from the keyboard once it runs
    await page.focus("#initremove");
    await page.keyboard.press("Enter");
    assert.equal(await page.isHidden("#initbox"), true);
    await page.fill("#width", "128");
    await page.fill("#height", "128");
    await page.fill("#steps", "150");
    await page.click("#generate");
    await page.waitForFunction(() => /^Step \d+ of 150$/.test(document.getElementById("msg").textContent),
      null, { timeout: 60000 }).catch(async (e) => { throw new Error(e.message + "; the page says: " + (await page.textContent("#msg"))); });
    await page.focus("#cancel");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.getElementById("msg").textContent === "Cancelled.", null, { timeout: 60000 });
    assert.equal(await page.locator("#gallery figure").count(), 1);
    assert.equal(await page.isDisabled("#cancel"), true);
    assert.equal(await page.inputValue("#sampler"), "euler_a", "the choice survives the list refresh");

    // reuse the seed of the last image
    await page.click("#reuse");
    assert.match(caption, new RegExp("seed " + (await page.inputValue("#seed")) + "( ·|$)"));

    if (process.env.SDW_SHOT) await page.screenshot({ path: process.env.SDW_SHOT, fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
