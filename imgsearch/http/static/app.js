// The imgsearch page: search by image, the index panel, the duplicates view.
// Talks only to this origin's /v1 API; a bearer token, when the server needs one, is kept
// for this tab only (sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const STATUS_EVERY_MS = 2000;

function headers(extra) {
  const token = sessionStorage.getItem("imgsearch-token");
  const all = Object.assign({}, extra || {});
  if (token) all.Authorization = "Bearer " + token;
  return all;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({}, options, {
    headers: headers(options && options.headers),
  }));
  if (response.status === 401 || response.status === 403) {
    $("token-form").hidden = false;
  }
  if (!response.ok) {
    let error = response.statusText;
    try { error = (await response.json()).error || error; } catch (_) { /* not JSON */ }
    throw new Error(error + " (HTTP " + response.status + ")");
  }
  return response;
}

async function thumbnail(path, size) {
  const response = await api("/v1/thumbnail?size=" + size + "&path=" + encodeURIComponent(path));
  return URL.createObjectURL(await response.blob());
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- search ----

async function search(file) {
  const message = $("message");
  message.className = "";
  message.textContent = "searching…";
  $("query").src = URL.createObjectURL(file);
  try {
    const response = await api("/v1/search?limit=5", {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    await show(await response.json());
    message.textContent = "";
  } catch (error) {
    message.className = "error";
    message.textContent = error.message;
    $("answer").hidden = true;
  }
}

async function show(answer) {
  const list = $("results");
  list.replaceChildren();
  const sources = answer.matches.filter((m) => m.match).map((m) => m.path);
  const verdict = $("verdict");
  verdict.className = sources.length ? "found" : "";
  verdict.textContent = sources.length
    ? "Source found: " + sources.join(", ")
    : answer.matches.length ? "No source in the index" : "No images indexed yet";
  for (const match of answer.matches) {
    const item = element("li", "result" + (match.match ? " source" : ""));
    const thumb = element("div", "thumb");
    const image = element("img");
    image.alt = match.path;
    thumb.append(image);
    item.append(thumb);
    const text = element("div");
    text.append(element("div", "path", match.path));
    text.append(element("span", "badge", match.match ? "SOURCE" : "similar"));
    const numbers = "score " + match.score.toFixed(3) + " · margin " + match.margin.toFixed(3)
      + (match.inliers ? " · " + match.inliers + " keypoints agree" : "");
    text.append(element("div", "numbers", numbers));
    item.append(text);
    list.append(item);
    image.src = await thumbnail(match.path, 240);
    if (match.match) drawRegion(thumb, match.region);
  }
  $("answer").hidden = false;
}

function drawRegion(thumb, region) {
  // Where the query lies in the source, as fractions of its width and height.
  const box = element("div", "region");
  box.style.left = 100 * region.x0 + "%";
  box.style.top = 100 * region.y0 + "%";
  box.style.width = 100 * (region.x1 - region.x0) + "%";
  box.style.height = 100 * (region.y1 - region.y0) + "%";
  thumb.append(box);
}

function setUpDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) search(event.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) search(event.target.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) search(file);
  });
}

// ---- index panel ----

async function refreshStatus() {
  try {
    const status = await (await api("/v1/status")).json();
    $("state").textContent = status.state + (status.observer ? " (" + status.observer + ")" : "");
    $("indexed").textContent = status.indexed;
    $("pending").textContent = status.pending
      + (status.pending && status.index_rate ? " · " + status.index_rate.toFixed(1) + "/s" : "");
    $("failed").textContent = status.failed;
    $("model").textContent = status.model + " (" + status.dimensions + " d)";
    $("model").title = status.model_reason;
    $("graph").textContent = status.graph_state === "off"
      ? "off"
      : status.graph_state + " · " + status.graph_vectors + " in graph, "
        + status.scanned_vectors + " scanned";
    $("graph").title = status.graph_error;
    $("failures").replaceChildren(...status.failures.map(
      (f) => element("li", "", f.path + ": " + f.reason)));
  } catch (error) {
    // A searcher started alone (split deployment) has no index to report: the embedder has.
    $("state").textContent = error.message.includes("HTTP 501")
      ? "index status is served by the embedder process"
      : error.message;
  }
}

// ---- duplicates ----

async function findDuplicates() {
  const message = $("duplicates-message");
  message.className = "";
  message.textContent = "comparing every image with its nearest neighbours…";
  $("groups").replaceChildren();
  try {
    const answer = await (await api("/v1/duplicates")).json();
    message.textContent = answer.groups.length
      ? answer.groups.length + " groups of copies among " + answer.images + " images"
      : "No copies among " + answer.images + " images";
    for (const group of answer.groups) {
      const item = element("li", "group");
      const members = element("div", "members");
      item.append(members);
      $("groups").append(item);
      for (const path of group.paths) {
        const member = element("figure", "member");
        const image = element("img");
        image.alt = path;
        member.append(image, element("figcaption", "path", path));
        members.append(member);
        image.src = await thumbnail(path, 160);
      }
      const best = group.pairs[0];
      item.append(element("div", "numbers",
        group.pairs.length + " pairs · best score " + best.score.toFixed(3)));
    }
  } catch (error) {
    message.className = "error";
    message.textContent = error.message;
  }
}

function setUpTabs() {
  const views = { "tab-search": "search-view", "tab-duplicates": "duplicates-view" };
  for (const [tab, view] of Object.entries(views)) {
    $(tab).addEventListener("click", () => {
      for (const [other, otherView] of Object.entries(views)) {
        $(other).classList.toggle("active", other === tab);
        $(otherView).hidden = otherView !== view;
      }
    });
  }
  $("find-duplicates").addEventListener("click", findDuplicates);
}

function setUpToken() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("imgsearch-token", $("token").value);
    $("token-form").hidden = true;
    refreshStatus();
  });
}

setUpDrop();
setUpTabs();
setUpToken();
refreshStatus();
setInterval(refreshStatus, STATUS_EVERY_MS);
