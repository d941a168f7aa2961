// webui.test.mjs: Debian's Chromium, driven by playwright-core, uses the built-in page of a running
// sd-worker (SDW_URL, SDW_KEY, SDW_SHOT from tests/system/test_clients_webui.py): enters the key, fills
// the form by keyboard, watches progress and the image arrive, cancels a second job, saves a screenshot.
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

    // keyboard only: focus the prompt, type, tab through the fields
    await page.focus("#prompt");
    await page.keyboard.type("a small lighthouse, keyboard only");
    await page.keyboard.press("Tab");
    await page.keyboard.type("blurry");
    for (const [id, v] of [["#width", "128"], ["#height", "128"], ["#steps", "40"]]) {
      await page.fill(id, v);
    }
    await page.selectOption("#sampler", "euler_a");
    await page.selectOption("#schedule", "karras");
    // record every progress value the bar shows
    await page.evaluate(() => {
      window.seen = [];
      new MutationObserver(() => window.seen.push(document.getElementById("msg").textContent)).observe(
        document.getElementById("msg"), { childList: true, characterData: true, subtree: true });
    });
    await page.keyboard.press("Control+Enter");
    await page.locator("#gallery figure").first().waitFor({ timeout: 120000 });
    const seen = await page.evaluate(() => window.seen);
    assert.ok(seen.some((t) => /^Step \d+ of 40$/.test(t)), "progress shown: " + JSON.stringify(seen));
    const img = page.locator("#gallery figure img").first();
    await page.waitForFunction(() => document.querySelector("#gallery img").naturalWidth === 128);
    assert.match(await img.getAttribute("src"), /^blob:/);
    const caption = await page.locator("#gallery figcaption").first().textContent();
    assert.match(caption, /40 steps · euler_a\/karras/);
    assert.equal(await page.locator("#gallery figcaption a").first().getAttribute("download") !== null, true);

    // a second, long job: cancel it from the keyboard once it runs
    await page.fill("#steps", "150");
    await page.click("#generate");
    await page.waitForFunction(() => /^Step \d+ of 150$/.test(document.getElementById("msg").textContent),
      null, { timeout: 60000 });
    await page.focus("#cancel");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.getElementById("msg").textContent === "Cancelled.", null, { timeout: 60000 });
    assert.equal(await page.locator("#gallery figure").count(), 1);
    assert.equal(await page.isDisabled("#cancel"), true);
    assert.equal(await page.inputValue("#sampler"), "euler_a", "the choice survives the list refresh");

    // reuse the seed of the last image
    await page.click("#reuse");
    assert.match(caption, new RegExp("seed " + (await page.inputValue("#seed")) + "$"));

    if (process.env.SDW_SHOT) await page.screenshot({ path: process.env.SDW_SHOT, fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
