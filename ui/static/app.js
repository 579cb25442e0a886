// Wardbox UI: the session timer, streamed answers (SSE over fetch), uploads.
// Served from the box itself; the Content-Security-Policy forbids inline script.
"use strict";

(function () {
  const timer = document.getElementById("session-timer");
  const csrf = timer ? timer.dataset.csrf : "";

  // --- Session timer: counts down from the server's figure, re-synced every 30 s. When it
  // reaches zero the server has ended the session too; go to the sign-in page.
  if (timer) {
    const left = document.getElementById("session-left");
    let deadline = Date.now() + Number(timer.dataset.remaining) * 1000;
    const show = () => {
      const s = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      left.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
      timer.classList.toggle("low", s <= 60);
      if (s <= 0) {
        window.location.assign("/login?m=idle");
      }
    };
    const sync = () => {
      fetch("/session/status", { credentials: "same-origin", headers: { Accept: "application/json" } })
        // A redirect means the server already ended the session (it sends anonymous
        // requests to the sign-in page).
        .then((r) => (r.ok && !r.redirected ? r.json() : { remaining: 0 }))
        .then((j) => { deadline = Date.now() + Number(j.remaining) * 1000; show(); })
        .catch(() => {});
    };
    show();
    setInterval(show, 1000);
    setInterval(sync, 30000);
  }

  // --- Streaming tasks: POST the form, read the text/event-stream body as it arrives.
  const patientEl = document.getElementById("patient");
  const patient = patientEl ? patientEl.dataset.patient : null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // The answer checked against its sources replaces the streamed text: items found in no
  // source are marked (the reason on hover and for screen readers), sentences citing no
  // source are underlined, and a banner above says what to verify.
  function showCheck(out, check) {
    out.textContent = "";
    for (const seg of check.segments) {
      let node = document.createTextNode(seg.text);
      if (seg.unsupported) {
        const mark = el("mark", undefined, "unsupported");
        mark.title = seg.unsupported;
        mark.append(node, el("span", " (not in the sources)", "sr-only"));
        node = mark;
      }
      if (seg.not_cited) {
        const span = el("span", undefined, "not-cited");
        span.title = "Not cited: this sentence names no source";
        span.append(node);
        node = span;
      }
      out.append(node);
    }
    const notes = [];
    if (check.unsupported > 0) {
      notes.push(check.unsupported + (check.unsupported === 1 ? " item of this answer is" : " items of this answer are") +
        " in none of the sources (marked). Verify before use.");
    }
    if (check.not_cited > 0) {
      notes.push(check.not_cited + (check.not_cited === 1 ? " sentence cites" : " sentences cite") + " no source (underlined).");
    }
    if (notes.length) {
      const banner = el("p", notes.join(" "), check.unsupported > 0 ? "check-banner unsupported" : "check-banner");
      banner.setAttribute("role", "alert");
      out.prepend(banner);
    }
  }

  function showTiming(out, t) {
    const secs = (ms) => (ms / 1000).toFixed(1) + " s";
    const parts = [];
    if (t.first_token_ms !== null && t.first_token_ms !== undefined) parts.push("first words after " + secs(t.first_token_ms));
    parts.push("complete in " + secs(t.total_ms));
    if (t.check_us !== null && t.check_us !== undefined) parts.push("checked in " + (t.check_us / 1000).toFixed(1) + " ms");
    out.append(el("p", parts.join(" · "), "answer-timing"));
  }

  // A question in a conversation: the page keeps the conversation's id for the next question
  // and its address for a reload, and says how much of the conversation the model was given.
  function showConversation(form, c) {
    form.dataset.conversation = c.id;
    const here = "/patients/" + encodeURIComponent(patient) + "/conversations/" + encodeURIComponent(c.id);
    if (window.location.pathname !== here) window.history.replaceState(null, "", here);
    const note = document.getElementById("conversation-note");
    if (!note) return;
    let text = "Question " + c.turn + " of this conversation.";
    if (c.carried > 0) text += " The answer takes the " + (c.carried === 1 ? "previous question" : c.carried + " previous questions") + " into account.";
    if (c.dropped > 0) text += " " + c.dropped + (c.dropped === 1 ? " older question was" : " older questions were") + " left out (the model's context is full).";
    note.textContent = text;
  }

  async function stream(task, text, out, cites, extra) {
    out.textContent = "";
    out.classList.remove("error", "done");
    out.classList.add("streaming");
    if (cites) cites.textContent = "";
    const body = new URLSearchParams(Object.assign({ text: text }, extra || {}));
    let resp;
    try {
      resp = await fetch("/patients/" + encodeURIComponent(patient) + "/" + task, {
        method: "POST",
        credentials: "same-origin",
        headers: { "x-csrf-token": csrf, "Content-Type": "application/x-www-form-urlencoded", Accept: "text/event-stream" },
        body: body,
      });
    } catch (e) {
      out.textContent = "The box could not be reached.";
      out.classList.add("error");
      out.classList.remove("streaming");
      return;
    }
    if (resp.status === 401) { window.location.assign("/login?m=idle"); return; }
    if (!resp.ok) {
      const html = await resp.text();
      const doc = new DOMParser().parseFromString(html, "text/html");
      const msg = doc.getElementById("message");
      out.textContent = msg ? msg.textContent : "The request failed (" + resp.status + ").";
      out.classList.add("error");
      out.classList.remove("streaming");
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let written = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const raw = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let event = "message";
        let data = "";
        for (const line of raw.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
        }
        if (!data) continue;
        const payload = JSON.parse(data);
        if (event === "token") {
          written += payload;
          out.append(document.createTextNode(payload));
        } else if (event === "conversation") {
          showConversation(document.getElementById("ask-form"), payload);
        } else if (event === "check") {
          showCheck(out, payload);
        } else if (event === "timing") {
          showTiming(out, payload);
        } else if (event === "citation" && cites) {
          const li = el("li");
          li.value = payload.n;
          const a = el("a", payload.title);
          a.href = payload.href;
          li.append(a, el("span", " " + payload.snippet, "snippet"));
          cites.append(li);
        } else if (event === "footer") {
          out.append(el("p", payload, "answer-footer"));
        } else if (event === "failed") {
          out.append(el("p", "The answer stopped: " + payload, "error"));
        }
      }
    }
    out.classList.remove("streaming");
    out.classList.add("done");
    if (task !== "ask") openDraftEditor(task, written);
  }

  // --- Drafts: reviewed and edited by the clinician, then saved to the record, copied as
  // plain text for the EHR, or printed.
  const editor = document.getElementById("draft-editor");
  const draftText = document.getElementById("draft-text");
  const draftStatus = document.getElementById("draft-status");

  function openDraftEditor(task, text) {
    if (!editor) return;
    editor.hidden = false;
    editor.dataset.kind = task;
    draftText.value = text.trim();
    draftStatus.textContent = "";
  }

  if (editor) {
    document.getElementById("draft-save").addEventListener("click", async () => {
      draftStatus.textContent = "Saving…";
      const resp = await fetch("/patients/" + encodeURIComponent(patient) + "/drafts", {
        method: "POST", credentials: "same-origin",
        headers: { "x-csrf-token": csrf, "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ kind: editor.dataset.kind, text: draftText.value }),
      });
      if (resp.ok) {
        const j = await resp.json();
        draftStatus.textContent = "";
        const a = el("a", "document " + j.document_id);
        a.href = "/patients/" + encodeURIComponent(patient) + "/documents/" + encodeURIComponent(j.document_id);
        a.id = "draft-saved";
        draftStatus.append(j.already_in_record ? "This draft is already in the record as " : "Saved to the record as ", a, ".");
      } else {
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const msg = doc.getElementById("message");
        draftStatus.textContent = msg ? msg.textContent : "The draft was not saved (" + resp.status + ").";
      }
    });
    document.getElementById("draft-copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(draftText.value);
        draftStatus.textContent = "Copied as plain text.";
      } catch (e) {
        draftText.select();
        draftStatus.textContent = "Select and copy the text above (the browser refused the clipboard).";
      }
    });
    document.getElementById("draft-print").addEventListener("click", () => {
      document.getElementById("draft-print-area").textContent = draftText.value;
      document.body.classList.add("printing-draft");
      window.print();
    });
    window.addEventListener("afterprint", () => document.body.classList.remove("printing-draft"));
  }

  document.querySelectorAll("form.task").forEach((form) => {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const task = form.dataset.task;
      const text = form.querySelector("textarea").value;
      const out = document.getElementById(task === "ask" ? "answer" : "draft");
      const cites = task === "ask" ? document.getElementById("citations") : null;
      let extra = {};
      if (task === "ask") {
        // The previous question and its answer move up into the thread.
        const thread = document.getElementById("thread");
        if (thread && out.dataset.question && out.textContent) {
          const turn = el("div", undefined, "turn");
          turn.append(el("p", out.dataset.question, "turn-question"), el("div", out.textContent, "turn-answer"));
          thread.append(turn);
        }
        out.dataset.question = text;
        form.querySelector("textarea").value = "";
        if (form.dataset.conversation) extra = { conversation: form.dataset.conversation };
      }
      stream(task, text, out, cites, extra);
    });
  });

  const upload = document.getElementById("upload-form");
  if (upload) {
    upload.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const status = document.getElementById("upload-status");
      const data = new FormData(upload);
      status.textContent = "Uploading…";
      const resp = await fetch("/patients/" + encodeURIComponent(patient) + "/upload", {
        method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf }, body: data,
      });
      if (resp.ok) {
        const j = await resp.json();
        if (j.already_in_record) {
          status.textContent = "This file is already in the record as document " + j.document_id + ".";
        } else {
          const counts = Object.entries(j.identifiers_replaced || {}).map(([tag, n]) => n + " " + tag.toLowerCase());
          status.textContent = "Added to the record as document " + j.document_id + ". " +
            (counts.length ? "Replaced in the index (de-identified): " + counts.join(", ") + "."
                           : "No identifiers were found to replace.");
        }
      } else {
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const msg = doc.getElementById("message");
        status.textContent = msg ? msg.textContent : "The upload failed (" + resp.status + ").";
        status.className = "error";
      }
    });
  }

  // --- Images: de-identified on the server, each file of an upload checked on its own; the
  // result list names the files (their names stay in the browser: the server keeps none) and
  // the images added are shown at once.
  const imageForm = document.getElementById("image-form");
  if (imageForm) {
    const imageCaption = (r) => (r.modality ? r.modality + ", " : "") + (r.kind === "dicom" ? "DICOM" : "photo") +
      ", " + r.width + "\u00d7" + r.height + ", added just now";
    const showImage = (r) => {
      const src = "/patients/" + encodeURIComponent(patient) + "/images/" + r.image_id;
      const fig = el("figure", undefined, "image");
      fig.id = "image-" + r.image_id;
      const link = el("a");
      link.href = src;
      const img = el("img");
      img.src = src;
      img.alt = (r.modality ? r.modality + " " : "") + r.kind + " image " + r.image_id;
      img.width = r.width;
      img.height = r.height;
      link.append(img);
      const caption = el("figcaption", imageCaption(r));
      if (r.burned_in) {
        caption.append(el("p", "Text may be burned into this image's pixels (" + r.burned_in +
          "); de-identification does not remove it. Check it before sharing.", "warning"));
      }
      fig.append(link, caption);
      const none = document.getElementById("no-images");
      if (none) none.remove();
      document.getElementById("image-list").prepend(fig);
    };
    const resultLine = (name, r) => {
      if (r.outcome === "refused") return el("li", name + ": " + r.message, "error");
      if (r.already_in_record) return el("li", name + ": already in the record as image " + r.image_id + ".");
      const what = r.kind === "dicom"
        ? "DICOM" + (r.modality ? " " + r.modality : "") + "; " + r.attributes_removed + " attributes removed, " +
          r.attributes_emptied_or_replaced + " emptied or replaced, " + r.uids_remapped + " UIDs remapped, " +
          r.dates_shifted + " dates shifted"
        : "photo; re-encoded from its pixels, its metadata dropped";
      return el("li", name + ": added as image " + r.image_id + " (" + what + ")" + (r.burned_in ? "; text may be burned into its pixels." : "."));
    };
    // A series longer than one upload takes goes in several, each within the server's limits
    // (with room for the form's own bytes); a file over the limit alone is sent alone and refused.
    const maxFiles = Number(imageForm.dataset.maxFiles);
    const maxBytes = Number(imageForm.dataset.maxBytes);
    const batchesOf = (files) => {
      const batches = [];
      let batch = [], size = 0;
      for (const f of files) {
        const cost = f.size + 1024;
        if (batch.length && (batch.length === maxFiles || size + cost > maxBytes)) {
          batches.push(batch);
          batch = [];
          size = 0;
        }
        batch.push(f);
        size += cost;
      }
      if (batch.length) batches.push(batch);
      return batches;
    };
    imageForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const status = document.getElementById("image-status");
      const list = document.getElementById("image-results");
      const files = Array.from(document.getElementById("image-file").files);
      status.className = "";
      list.replaceChildren();
      let added = 0, refused = 0, sent = 0;
      for (const batch of batchesOf(files)) {
        status.textContent = "Uploading and de-identifying… (" + sent + " of " + files.length + " done)";
        const data = new FormData();
        for (const f of batch) data.append("file", f, f.name);
        const resp = await fetch("/patients/" + encodeURIComponent(patient) + "/images", {
          method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf }, body: data,
        });
        if ((resp.headers.get("content-type") || "").startsWith("application/json")) {
          const j = await resp.json();
          added += j.filed;
          refused += j.refused;
          for (const r of j.images) {
            list.append(resultLine(batch[r.file - 1] ? batch[r.file - 1].name : "file " + (sent + r.file), r));
            if (r.outcome === "filed" && !r.already_in_record) showImage(r);
          }
        } else {
          // The whole upload was refused (too large, not allowed, …): each of its files says why.
          const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
          const msg = doc.getElementById("message");
          const why = msg ? msg.textContent : "the upload failed (" + resp.status + ")";
          refused += batch.length;
          for (const f of batch) list.append(el("li", f.name + ": " + why, "error"));
        }
        sent += batch.length;
      }
      status.textContent = added + " of " + files.length + " added" + (refused ? ", " + refused + " refused." : ".");
      if (!added) status.className = "error";
      imageForm.reset();
    });
  }
})();
