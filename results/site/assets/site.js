// peft-harness leaderboard site: draws the plots (plotly, a local file), adds sorting to every table and
// filters to the leaderboard's, and shows the pair of methods chosen on the compare page. Everything
// works from file://; nothing is fetched.
"use strict";

function drawPlots() {
  document.querySelectorAll("script[data-plot]").forEach(function (holder) {
    var figure = JSON.parse(holder.textContent);
    var element = document.getElementById(holder.getAttribute("data-plot"));
    Plotly.newPlot(element, figure.data, figure.layout, {displaylogo: false, responsive: true});
  });
}

function sortValue(cell) {
  var value = cell.getAttribute("data-value");
  return value === null ? cell.textContent.trim().toLowerCase() : parseFloat(value);
}

function isMissing(value) {
  return value === "—" || value === "" || (typeof value === "number" && isNaN(value));
}

function makeSortable(table) {
  table.querySelectorAll("thead th").forEach(function (header, column) {
    header.classList.add("sortable");
    header.setAttribute("title", "sort by this column");
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = sortValue(a.cells[column]), y = sortValue(b.cells[column]);
        var missingX = isMissing(x), missingY = isMissing(y);
        if (missingX !== missingY) { return missingX ? 1 : -1; }  // empty cells last either way
        var order = x < y ? -1 : x > y ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
}

function applyFilters() {
  var method = document.getElementById("method-filter").value;
  var task = document.getElementById("task-filter").value;
  document.querySelectorAll("tr[data-method]").forEach(function (row) {
    row.hidden = method !== "" && row.getAttribute("data-method") !== method;
  });
  document.querySelectorAll("[data-task]").forEach(function (cell) {
    cell.hidden = task !== "" && cell.getAttribute("data-task") !== task;
  });
}

function fixed(value, signed) {
  if (value === null || value === undefined) { return "—"; }
  return (signed && value > 0 ? "+" : "") + value.toFixed(2);
}

// A stored pair is first − second with the two in sorted order; picked the other way round, its sign flips.
function pairRows(data, first, second) {
  var forward = data.pairs[first + "\t" + second];
  if (forward) { return forward; }
  return (data.pairs[second + "\t" + first] || []).map(function (row) {
    var flipped = Object.assign({}, row, {first: row.second, second: row.first});
    if (row.diff !== undefined) {
      flipped.diff = row.diff === null ? null : -row.diff;
      flipped.diff_low = row.diff_high === null ? null : -row.diff_high;
      flipped.diff_high = row.diff_low === null ? null : -row.diff_low;
      flipped.p_better = row.p_better === null ? null : 1 - row.p_better;
      flipped.mark = {"▲": "▼", "▼": "▲"}[row.mark] || row.mark;
    }
    return flipped;
  });
}

function escapeText(text) {
  var element = document.createElement("span");
  element.textContent = text;
  return element.innerHTML;
}

// A table cell that sorts by `value` (and aligns right), or a plain one where there is no value.
function numberCell(value, text) {
  var known = value !== null && value !== undefined;
  return (known ? '<td data-value="' + value + '">' : "<td>") + text + "</td>";
}

function showPair(data) {
  var first = document.getElementById("compare-first").value;
  var second = document.getElementById("compare-second").value;
  var result = document.getElementById("compare-result");
  if (first === second) { result.innerHTML = "<p>Pick two different methods.</p>"; return; }
  var rows = pairRows(data, first, second);
  if (rows.length === 0) { result.innerHTML = "<p>These two methods share no model and task.</p>"; return; }
  var head = ["model", "task", escapeText(first), escapeText(second),
              escapeText(first + " − " + second) + " [95 % interval]", "p", "P(" + escapeText(first) + " better)"];
  var body = rows.map(function (row) {
    var difference = row.diff === undefined ? "no shared seed" :
      fixed(row.diff, true) + (row.diff_low === null ? "" : " [" + fixed(row.diff_low, true) + ", " +
      fixed(row.diff_high, true) + "]") + ' <span class="mark">' + row.mark + "</span>";
    var cells = [
      "<td>" + escapeText(row.model) + "</td>", "<td>" + escapeText(row.task) + "</td>",
      numberCell(row.first, fixed(row.first)), numberCell(row.second, fixed(row.second)),
      numberCell(row.diff, difference),
      numberCell(row.p, row.p === null || row.p === undefined ? "—" : row.p.toPrecision(2)),
      numberCell(row.p_better, row.p_better === null || row.p_better === undefined ? "—" : row.p_better.toFixed(2))
    ];
    return "<tr>" + cells.join("") + "</tr>";
  });
  result.innerHTML = '<div class="table-scroll"><table class="sortable"><thead><tr><th>' + head.join("</th><th>") +
    "</th></tr></thead><tbody>" + body.join("") + "</tbody></table></div>";
  makeSortable(result.querySelector("table"));
}

// The two methods named in the page's link (#first|second, each URL-encoded), or null.
function pairInLink(methods) {
  var parts = window.location.hash.slice(1).split("|").map(decodeURIComponent);
  var known = parts.length === 2 && parts.every(function (m) { return methods.indexOf(m) >= 0; });
  return known ? parts : null;
}

function setUpCompare() {
  var holder = document.querySelector("script[data-compare]");
  if (!holder) { return; }
  var data = JSON.parse(holder.textContent);
  var linked = pairInLink(data.methods);  // compare.html#<first>|<second> picks that pair
  ["compare-first", "compare-second"].forEach(function (id, place) {
    var select = document.getElementById(id);
    select.value = linked ? linked[place] : select.getAttribute("data-default");
    select.addEventListener("change", function () {
      var pair = ["compare-first", "compare-second"].map(function (i) { return document.getElementById(i).value; });
      history.replaceState(null, "", "#" + pair.map(encodeURIComponent).join("|"));
      showPair(data);
    });
  });
  showPair(data);
}

document.addEventListener("DOMContentLoaded", function () {
  if (window.Plotly) { drawPlots(); }
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  ["method-filter", "task-filter"].forEach(function (id) {
    var select = document.getElementById(id);
    if (select) { select.addEventListener("change", applyFilters); }
  });
  setUpCompare();
});
