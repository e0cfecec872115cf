// peft-harness leaderboard site: draws the plots (plotly, a local file) and adds sorting and filters to
// the plain HTML tables. Everything works from file://; nothing is fetched.
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

function makeSortable(table) {
  table.querySelectorAll("thead th").forEach(function (header, column) {
    header.classList.add("sortable");
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = sortValue(a.cells[column]), y = sortValue(b.cells[column]);
        var missingX = x === "—" || (typeof x === "number" && isNaN(x));
        var missingY = y === "—" || (typeof y === "number" && isNaN(y));
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

document.addEventListener("DOMContentLoaded", function () {
  if (window.Plotly) { drawPlots(); }
  document.querySelectorAll("table.board").forEach(makeSortable);
  ["method-filter", "task-filter"].forEach(function (id) {
    var select = document.getElementById(id);
    if (select) { select.addEventListener("change", applyFilters); }
  });
});
