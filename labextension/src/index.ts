/**
 * rhapsody_lab for JupyterLab 4: a sidebar listing the kernels' live sessions (backends,
 * task counts, refreshed every second from `<base_url>rhapsody-lab/sessions`), and one
 * main-area panel per dashboard plot (an iframe of the session's Bokeh app, proxied by
 * the `rhapsody_lab.server` extension under the Jupyter server's base URL). Open plot
 * panels are restored after a page reload (the layout restorer re-runs the open command
 * with the arguments each panel keeps in its dataset), as dask-labextension does.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  IFrame,
  MainAreaWidget,
  WidgetTracker
} from '@jupyterlab/apputils';

import { rhapsodyIcon, SessionsPanel } from './panel';

const PLUGIN_ID = 'rhapsody-lab:plugin';

namespace CommandIDs {
  export const openPlot = 'rhapsody-lab:open-plot';
  export const showSessions = 'rhapsody-lab:show-sessions';
}

interface IPlotArgs {
  key: string;
  uid: string;
  plot: string;
  url: string;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'rhapsody_lab sessions sidebar and live dashboard panels',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const tracker = new WidgetTracker<MainAreaWidget<IFrame>>({
      namespace: 'rhapsody-lab-plots'
    });

    app.commands.addCommand(CommandIDs.openPlot, {
      label: args => `rhapsody_lab: ${args['plot'] ?? 'dashboard plot'}`,
      execute: args => {
        const { key, uid, plot, url } = args as unknown as IPlotArgs;
        const id = `rhapsody-lab-plot-${key}-${plot}`;
        const open = tracker.find(w => w.id === id);
        if (open) {
          app.shell.activateById(id);
          return open;
        }
        const frame = new IFrame({
          sandbox: ['allow-scripts', 'allow-same-origin']
        });
        frame.url = url;
        frame.addClass('rh-lab-plot-frame');
        const widget = new MainAreaWidget({ content: frame });
        widget.id = id;
        widget.addClass('rh-lab-plot');
        widget.node.dataset.sessionKey = key;
        widget.node.dataset.plot = plot;
        widget.node.dataset.uid = uid;
        widget.node.dataset.url = url;
        widget.title.label = `${plot} · ${uid}`;
        widget.title.caption = `rhapsody_lab ${plot} of session ${uid}`;
        widget.title.icon = rhapsodyIcon;
        widget.title.closable = true;
        app.shell.add(widget, 'main', { mode: 'split-right' });
        void tracker.add(widget);
        app.shell.activateById(id);
        return widget;
      }
    });

    const panel = new SessionsPanel((key, uid, plot, url) => {
      void app.commands.execute(CommandIDs.openPlot, { key, uid, plot, url });
    });
    app.shell.add(panel, 'left', { rank: 400 });
    if (restorer) {
      restorer.add(panel, panel.id);
      void restorer.restore(tracker, {
        command: CommandIDs.openPlot,
        args: widget => ({
          key: widget.node.dataset.sessionKey ?? '',
          uid: widget.node.dataset.uid ?? '',
          plot: widget.node.dataset.plot ?? '',
          url: widget.node.dataset.url ?? ''
        }),
        name: widget => widget.id
      });
    }

    app.commands.addCommand(CommandIDs.showSessions, {
      label: 'rhapsody_lab: Show Sessions',
      execute: () => app.shell.activateById(panel.id)
    });
    if (palette) {
      palette.addItem({ command: CommandIDs.showSessions, category: 'rhapsody_lab' });
    }
  }
};

export default plugin;
