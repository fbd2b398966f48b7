// Drives the status page in the distribution's headless Chromium for tests/status_page.rs, which asserts
// on what this prints: one JSON object with each page's URL, serialized DOM and script count, what an
// expanded audit entry shows, and document.cookie. Usage: node drive.mjs PLAN_JSON
// PLAN: {"base": "http://127.0.0.1:PORT", "token": "...", "wrong_token": "...", "user": "ada",
//        "expand": "text in the entry to open", "shots": "dir for PNGs", "chromium": "/usr/bin/chromium"}
import puppeteer from 'puppeteer-core';

const plan = JSON.parse(process.argv[2]);
const browser = await puppeteer.launch({
  executablePath: plan.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  defaultViewport: { width: 1280, height: 1600 },
});
const out = { pages: {}, console: [] };
try {
  const page = await browser.newPage();
  page.on('console', (m) => out.console.push(m.text()));
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
  const capture = async (name) => {
    out.pages[name] = {
      url: page.url(),
      html: await page.content(),
      scripts: await page.$$eval('script', (s) => s.length),
      handlers: await page.$$eval('*', (all) => all.filter((el) => [...el.attributes].some((a) => a.name.startsWith('on'))).length),
    };
  };
  const submit = async (selector) => {
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
  };

  // Not signed in: the page sends the browser to the login form.
  await page.goto(`${plan.base}/`, { waitUntil: 'load' });
  await capture('login');
  // A wrong token is refused on the form.
  await page.type('#token', plan.wrong_token);
  await submit('form[action="/login"] button');
  await capture('wrong_login');
  // The admin token opens the overview.
  await page.type('#token', plan.token);
  await submit('form[action="/login"] button');
  await capture('overview');
  await page.screenshot({ path: `${plan.shots}/status-page.png`, fullPage: true });
  out.document_cookie = await page.evaluate(() => document.cookie);

  // The audit log, with the failed change opened.
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('nav a[href="/audit"]')]);
  const boxes = await page.$$('details.entry-box');
  let opened = null;
  for (const box of boxes) {
    const text = await box.evaluate((el) => el.querySelector('summary').innerText);
    if (text.includes(plan.expand)) {
      await box.evaluate((el) => el.querySelector('summary').click());
      opened = await box.evaluate((el) => ({ open: el.open, text: el.innerText }));
      await box.evaluate((el) => el.scrollIntoView());
      break;
    }
  }
  out.expanded = opened;
  await capture('audit');
  await page.screenshot({ path: `${plan.shots}/status-audit.png`, fullPage: true });

  // Filtering by user, through the form.
  await page.type('input[name="user"]', plan.user);
  await submit('form.filters button');
  await capture('filtered');
  out.filtered_names = await page.$$eval('details.entry-box .name', (n) => n.map((e) => e.textContent));

  // The "needs a person" view.
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('nav a[href="/audit?view=person"]')]);
  await capture('person');
  out.person_outcomes = await page.$$eval('details.entry-box .outcome', (n) => n.map((e) => e.textContent));

  // Logging out ends the session: the overview asks for the token again.
  await submit('form.logout button');
  await page.goto(`${plan.base}/`, { waitUntil: 'load' });
  out.after_logout_url = page.url();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
