// Progress of runs started from this page: poll each unfinished job once a second.
(function () {
  document.querySelectorAll("[data-job]").forEach(el => {
    const id = el.dataset.job;
    const bar = el.querySelector("progress"), text = el.querySelector(".job-text");
    async function poll() {
      const res = await fetch(`/api/jobs/${encodeURIComponent(id)}`);
      if (!res.ok) return;
      const j = await res.json();
      if (j.total) { bar.max = j.total; bar.value = j.done; }
      const rate = j.elapsed_s > 0 && j.done ? ` · ${(j.done / j.elapsed_s).toFixed(1)} images/s` : "";
      text.textContent = j.state === "running" ? `${j.done} of ${j.total || "?"} images${rate}` : j.state;
      if (j.state === "done") {
        const open = el.querySelector(".job-open");
        if (open) open.classList.remove("hidden"); else location.reload();
      } else if (j.state === "failed") {
        const pre = el.querySelector(".job-error");
        if (pre) { pre.textContent = j.error + "\n" + j.log.join("\n"); pre.classList.remove("hidden"); }
        text.textContent = "failed";
      } else {
        setTimeout(poll, 1000);
      }
    }
    poll();
  });
})();
