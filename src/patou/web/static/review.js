// Keyboard review: select an image, press a label's key; corrections go to the JSON API.
(function () {
  const cfg = JSON.parse(document.getElementById("review-config").textContent);
  const cards = Array.from(document.querySelectorAll("#grid .card"));
  const buttons = Array.from(document.querySelectorAll("#palette .lab"));
  const status = document.getElementById("status");
  const reviewer = document.getElementById("reviewer");
  let sel = -1;

  if (reviewer) {
    reviewer.value = localStorage.getItem("patou-reviewer") || cfg.user || "";
    reviewer.addEventListener("change", () => localStorage.setItem("patou-reviewer", reviewer.value.trim()));
  }

  function say(text, bad) {
    if (!status) return;
    status.textContent = text;
    status.className = "small" + (bad ? " bad" : " good");
  }

  function select(i, quiet) {
    if (!cards.length) return;
    sel = Math.max(0, Math.min(cards.length - 1, i));
    cards.forEach((c, k) => c.classList.toggle("selected", k === sel));
    if (!quiet) cards[sel].scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function update(img) {
    cards.filter(c => c.dataset.root === img.root && c.dataset.file === img.file).forEach(c => {
      const now = c.querySelector(".label-now");
      now.textContent = img.label || "—";
      now.className = "label-now lbl-" + (img.label || "none");
      c.dataset.label = img.label || "";
      c.classList.toggle("is-verified", !!img.verified);
      c.querySelector(".check-mark").textContent = img.verified
        ? "✔ checked" + (img.verified.verified_by ? " by " + img.verified.verified_by : "") : "";
      const score = img.score == null ? "" : img.score.toFixed(2);
      c.querySelector(".score").textContent = img.verified ? "" : score;
      c.querySelector(".machine").textContent = img.verified ? `machine said: ${img.machine_label || "—"} ${score}` : "";
      c.dataset.count = img.count == null ? "" : img.count;
      const count = c.querySelector(".count");
      if (count) count.textContent = img.count == null ? "" : "×" + img.count;
    });
  }

  async function send(body) {
    body.verified_by = reviewer ? reviewer.value.trim() : "";
    const res = await fetch(`/api/runs/${encodeURIComponent(cfg.rid)}/corrections`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.detail || res.statusText);
    data.images.forEach(update);
    return data;
  }

  const whole = document.getElementById("whole-event");
  const countBox = document.getElementById("count");

  async function correct(label, wholeEvent) {
    wholeEvent = label !== null && (wholeEvent || (whole && whole.checked));
    if (sel < 0) { say("Select an image first (click it, or press →).", true); return; }
    const c = cards[sel];
    try {
      if (wholeEvent && c.dataset.event) {
        const d = await send({ event: c.dataset.event, label });
        say(`Event ${c.dataset.event}: ${d.saved} images set to ${label}.`);
        if (whole) whole.checked = false;
      } else {
        // a count typed in the palette goes with this photo's label, then the box is cleared
        const count = label !== null && countBox && countBox.value.trim() !== "" ? countBox.value.trim() : null;
        await send({ items: [{ root: c.dataset.root, file: c.dataset.file, label, count }] });
        if (countBox) countBox.value = "";
        say(label === null ? `${c.dataset.file}: correction withdrawn.`
          : `${c.dataset.file}: ${label}` + (count === null ? "." : `, ${count} animals.`));
        if (label !== null && sel < cards.length - 1) select(sel + 1);  // on to the next image
      }
    } catch (e) {
      say("Not saved: " + e.message, true);
    }
  }

  cards.forEach((c, i) => c.addEventListener("click", e => {
    if (e.target.closest("a")) return;
    select(i);
  }));
  // A clicked control gives the keyboard back, so Enter and the number keys keep their review meaning.
  buttons.forEach(b => b.addEventListener("click", e => { b.blur(); correct(b.dataset.label, e.shiftKey); }));
  const other = document.getElementById("other-label");
  if (other) other.addEventListener("keydown", e => {
    if (e.key === "Enter" && other.value.trim()) { e.preventDefault(); correct(other.value.trim(), e.shiftKey); other.blur(); }
  });
  if (countBox) countBox.addEventListener("keydown", e => {
    if (e.key !== "Enter" || sel < 0) return;
    e.preventDefault();
    const now = cards[sel].dataset.label;
    if (!now || now === "undefined") { say("Give this photo a label with its count.", true); return; }
    countBox.blur();
    correct(now, false);
  });
  const confirm = document.getElementById("confirm");
  function confirmMachine(wholeEvent) {
    const machine = sel >= 0 ? cards[sel].dataset.machine : "";
    if (!machine || machine === "undefined") { say("The machine gave no label here: pick one.", true); return; }
    correct(machine, wholeEvent);
  }
  if (confirm) confirm.addEventListener("click", () => { confirm.blur(); confirmMachine(false); });
  const undo = document.getElementById("undo");
  if (undo) undo.addEventListener("click", () => { undo.blur(); correct(null, false); });
  if (whole) whole.addEventListener("change", () => whole.blur());

  document.addEventListener("keydown", e => {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const digit = /^Digit([0-9])$/.exec(e.code);
    if (digit) {
      const n = digit[1] === "0" ? 9 : Number(digit[1]) - 1;
      if (buttons[n]) { e.preventDefault(); correct(buttons[n].dataset.label, e.shiftKey); }
    } else if (e.key === "ArrowRight" || e.key === "ArrowDown" || e.key === "j") {
      e.preventDefault(); select(sel + 1);
    } else if (e.key === "ArrowLeft" || e.key === "ArrowUp" || e.key === "k") {
      e.preventDefault(); select(sel - 1);
    } else if (e.key === "Enter" && sel >= 0) {
      e.preventDefault(); confirmMachine(e.shiftKey);
    } else if (e.key === "Backspace" || e.key === "u") {
      e.preventDefault(); correct(null, false);
    } else if (e.key === "n" && document.getElementById("next-event")) {
      location.href = document.getElementById("next-event").href;
    } else if (e.key === "p" && document.getElementById("prev-event")) {
      location.href = document.getElementById("prev-event").href;
    }
  });

  // Exports: same code as the CLI, run by the server; the result is shown under the buttons.
  const out = document.getElementById("export-result");
  function show(data) {
    out.textContent = JSON.stringify(data, null, 1);
    const link = data.file || (data.files && data.files[0]);
    if (link) { const a = document.createElement("a"); a.href = link; a.textContent = "\ndownload"; out.appendChild(a); }
  }
  document.querySelectorAll("[data-export]").forEach(b => b.addEventListener("click", async () => {
    out.textContent = "working…";
    const res = await fetch(b.dataset.export, { method: "POST" });
    show(await res.json());
  }));
  const sortForm = document.querySelector("form[data-sort]");
  if (sortForm) sortForm.addEventListener("submit", async e => {
    e.preventDefault();
    out.textContent = "sorting…";
    const res = await fetch(sortForm.dataset.sort, { method: "POST", body: new URLSearchParams(new FormData(sortForm)) });
    show(await res.json());
  });

  if (cards.length) select(0, true);
})();
