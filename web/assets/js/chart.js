// A small line chart on a canvas, drawn by hand: each series on its own scale, newest right.

function cssColor(canvas, variable, fallback) {
  return getComputedStyle(canvas).getPropertyValue(variable).trim() || fallback;
}

/**
 * Draw `series` ([{values, color: "--css-variable", label}]) over the last `capacity` points.
 * The canvas is sized to its box and the screen's pixel ratio on each call.
 */
export function drawChart(canvas, series, capacity) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);

  const pad = { top: 18, bottom: 6, left: 4, right: 4 };
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  context.strokeStyle = cssColor(canvas, "--line", "#ccc");
  context.lineWidth = 1;
  for (let step = 0; step <= 4; step += 1) {
    const y = Math.round(pad.top + (plotHeight * step) / 4) + 0.5;
    context.beginPath();
    context.moveTo(pad.left, y);
    context.lineTo(width - pad.right, y);
    context.stroke();
  }

  context.font = "12px system-ui, sans-serif";
  let labelX = pad.left;
  for (const { values, color, label } of series) {
    const stroke = cssColor(canvas, color, "#1f6feb");
    const shown = values.slice(-capacity);
    const top = Math.max(1, ...shown.filter(Number.isFinite));
    context.strokeStyle = stroke;
    context.lineWidth = 2;
    context.beginPath();
    shown.forEach((value, index) => {
      const x = pad.left + plotWidth - ((shown.length - 1 - index) * plotWidth) / (capacity - 1);
      const y = pad.top + plotHeight - ((Number.isFinite(value) ? value : 0) / top) * plotHeight;
      if (index === 0) context.moveTo(x, y);
      else context.lineTo(x, y);
    });
    context.stroke();
    context.fillStyle = stroke;
    if (shown.length) {
      // the newest reading as a dot, so a single reading shows too
      const last = shown[shown.length - 1];
      const y = pad.top + plotHeight - ((Number.isFinite(last) ? last : 0) / top) * plotHeight;
      context.beginPath();
      context.arc(pad.left + plotWidth, y, 3, 0, 2 * Math.PI);
      context.fill();
    }
    const text = `${label} (max ${top.toLocaleString("en", { maximumFractionDigits: 1 })})`;
    context.fillText(text, labelX, 13);
    labelX += context.measureText(text).width + 16;
  }
}
